"""The ZeroMQ connector: a SUB socket for market data and a DEALER socket for orders.

Both sockets belong to one poller thread owned by the connector. The actor thread never
touches them: its commands (orders, cancels, requests, subscriptions) go through a queue
and a wake-up socket. Each poll cycle the thread reads what is waiting on both sockets,
hands the quotes of the cycle to the actor as ONE ``QuoteBatch``, and each order event as
its own message, through the connection attempt's ``SessionLink``.

``connect`` opens the sockets, starts the thread and returns; the session is up (the
thread says so through the link) once a heartbeat and a pong of the same venue session
have arrived.

Market data is checked before it is trusted: a frame that is not ``[topic, JSON]``, has
unknown fields, NaN, a negative size, or whose topic does not match its symbol is counted
as malformed and skipped. Sequence numbers are per topic; a frame ahead of the expected
number is held in a bounded reorder window, and when the window overflows (or holds a
frame too long) the gap is reported and the stream moves on. Frames behind the expected
number are duplicates and are dropped, except that ``resync_after`` consecutive frames
behind it that are in sequence with each other mean the stream is there and the expected
number is wrong (a burst of far-ahead numbers was taken for the stream): the topic is
resynchronised to them and the reset is counted, logged and raised as a WARNING
``sequence_reset`` safety event, so no burst can blind a symbol. A venue whose heartbeat
stops for ``stale_after_s``, whose pings go unanswered, or whose session identifier
changes (a restart) is a lost session: the connector closes it and reconnects.

Staleness (``core.staleness``): the pings are the session's probe. Once no pong has come
for ``ping_interval_s + probe_timeout_s`` the session is stale: new orders are refused
(``VENUE_DOWN``) by ``submit`` and again by the poller at the moment it would write one,
never queued into a link that may deliver them much later. After ``stale_after_s +
ping_interval_s`` without a pong the order channel's TCP connection gets ``SO_LINGER`` 0
(libzmq has no option for it; the socket is found by its peer) and the session is lost.
With ``order_expiry_s`` every order carries ``expire_ns`` (the venue refuses it when it
arrives later); an order first acknowledged more than ``late_ack_warn_s`` after it was
sent raises a WARNING ``late_execution`` safety event.

The wire protocol is described in docs/zmq-protocol.md; its frames are in
``messages.zmq_wire``, shared with the simulated venue.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
import zmq
from msgspec import Meta

from actors.connectors._io import IoThread, SessionLink
from actors.connectors._staleness import linger_zero
from actors.connectors.base import Connector, ConnectorConfig
from actors.errors import ConnectorError
from core.staleness import LateAcks, Liveness, SessionProbe, expire_time_ns
from messages import (
    CancelAllDone,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    Quote,
    QuoteBatch,
    RejectReason,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
    now_ns,
)
from messages import zmq_wire as wire
from messages.bounds import Endpoint, Interval

_ENDPOINT_PREFIXES = ("ipc://", "tcp://")


class ZmqConfig(ConnectorConfig, frozen=True, kw_only=True):
    """Settings of one ZeroMQ venue session."""

    kind: str = "zmq"
    """Always ``zmq``."""
    market_endpoint: Endpoint = "tcp://127.0.0.1:5601"
    """The venue's market data (PUB) endpoint."""
    order_endpoint: Endpoint = "tcp://127.0.0.1:5600"
    """The venue's order gateway (ROUTER) endpoint."""
    stale_after_s: Annotated[float, Meta(ge=0.01, le=3600.0)] = 2.0
    """No venue heartbeat (or no answer to pings) for this long means the session is lost."""
    ping_interval_s: Interval = 1.0
    """How often the order channel is pinged (round-trip latency and liveness)."""
    reorder_window: Annotated[int, Meta(ge=0, le=100_000)] = 16
    """Out-of-order frames held per topic before the missing ones count as a gap."""
    reorder_timeout_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 0.5
    """Longest an out-of-order frame is held before the missing ones count as a gap."""
    poll_interval_s: Interval = 0.05
    """Longest the poller thread sleeps between cycles."""
    max_batch: Annotated[int, Meta(ge=1, le=1_000_000)] = 2000
    """Most market data frames read in one cycle (one ``QuoteBatch``)."""
    resync_after: int = 5
    """Consecutive frames of a topic behind its expected sequence number, each following
    the one before, after which the topic is resynchronised to them (and an alert raised).
    At least 1."""
    probe_timeout_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 0.5
    """How long a ping may go unanswered, beyond ``ping_interval_s`` since the last pong,
    before the session is stale and takes no new order. Above 0."""
    late_ack_warn_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 2.0
    """An order first acknowledged by the venue (``accepted`` or ``filled``) more than this
    long after it was sent raises a ``late_execution`` WARNING. Above 0."""
    order_expiry_s: Annotated[float, Meta(ge=0.0, le=86400.0)] = 5.0
    """Every order carries ``expire_ns`` this many seconds after its sending: the venue
    refuses one that arrives later (an arrival deadline only: a resting order is not
    limited by it). 0 sends none."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("market_endpoint", "order_endpoint"):
            endpoint = getattr(self, field)
            if not endpoint.startswith(_ENDPOINT_PREFIXES) or endpoint.endswith((":", "//")):
                raise ValueError(f"{field}: a tcp://HOST:PORT or ipc://PATH endpoint, got {endpoint!r}")
        for field in ("stale_after_s", "ping_interval_s", "reorder_timeout_s", "poll_interval_s"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field}: must be positive")
        if self.reorder_window < 0:
            raise ValueError("reorder_window: must not be negative")
        if self.max_batch < 1:
            raise ValueError("max_batch: must be at least 1")
        if self.resync_after < 1:
            raise ValueError("resync_after: must be at least 1")
        for field in ("probe_timeout_s", "late_ack_warn_s"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 < value <= 3600):
                raise ValueError(f"{field}: must be above 0 and at most 3600, got {value}")
        if not (math.isfinite(self.order_expiry_s) and 0 <= self.order_expiry_s <= 86400):
            raise ValueError(f"order_expiry_s: must be within 0..86400, got {self.order_expiry_s}")


# Request ids say what a request was for, so a reply or an error needs no lookup table.
_NEW = "o:"
_CANCEL = "c:"
_CANCEL_ALL = "x:"
_POSITIONS = "p:"
_PING = "ping:"
_RESYNC = "resync"
_WORKING = "w:"
"""Prefix of the open-orders request sent with a positions request: its answer goes with
the positions report (reconciliation), not out as acknowledgements."""
_MAX_WORKING_LISTS = 64
"""Open-order lists kept waiting for their positions reply; the oldest go first."""
_STATUS = "s:"


class _TopicState:
    """Sequence tracking of one market data topic."""

    __slots__ = ("behind_last", "behind_run", "expected", "held", "held_since")

    def __init__(self) -> None:
        self.expected: int | None = None
        self.held: dict[int, Quote] = {}
        self.held_since = 0.0
        self.behind_run = 0
        """Consecutive frames behind ``expected``, each following the one before."""
        self.behind_last = 0
        """Sequence number of the last of them."""


class ZmqConnector(Connector):
    """A venue session over ZeroMQ (the protocol of ``tradeguard venue zmq``)."""

    kind: ClassVar[str] = "zmq"
    config_type: ClassVar[type[ConnectorConfig]] = ZmqConfig

    def __init__(self, config: ConnectorConfig, state_dir: Path) -> None:
        if not isinstance(config, ZmqConfig):
            raise TypeError(f"config: expected ZmqConfig, got {type(config).__name__}")
        super().__init__(config, state_dir)
        self.zmq_config: ZmqConfig = config
        self.session = ""
        """The venue session identifier this connection is bound to."""
        self._context: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sub: zmq.Socket[bytes] | None = None
        self._dealer: zmq.Socket[bytes] | None = None
        self._wake_pull: zmq.Socket[bytes] | None = None
        self._wake_push: zmq.Socket[bytes] | None = None
        self._wake_lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._thread: IoThread | None = None
        self._link = SessionLink(None, 0)
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._lost = threading.Event()
        # Poller-thread state.
        self._subscribed: set[str] = set()
        self._topics: dict[str, _TopicState] = {}
        self._last_heartbeat = 0.0
        self._last_pong = 0.0
        self._ping_ids = itertools.count(1)
        self._frame_handlers = self._order_handlers()
        self._working_lists: dict[str, tuple[str, ...]] = {}
        """Positions request id -> the venue's working orders read just before (poller thread)."""
        self._probe: SessionProbe | None = None  # poller thread; from the session's first pong
        self._stale = threading.Event()  # set by the poller while a ping is overdue
        self._late = LateAcks(config.late_ack_warn_s)  # actor thread

    # ---- the contract (actor thread) -------------------------------------------------------

    def connect(self) -> None:
        """Open both sockets and start the poller; it says ``up`` on a heartbeat and a pong."""
        cfg = self.zmq_config
        self._link = self.link
        self._stopping.clear()
        self._ready.clear()
        self._lost.clear()
        self.session = ""
        self._subscribed.clear()
        self._topics.clear()
        self._last_heartbeat = self._last_pong = 0.0
        self._probe = None
        self._stale.clear()
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._context = context
        try:
            self._sub = context.socket(zmq.SUB)
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, wire.HEARTBEAT_TOPIC.encode())
            self._sub.connect(cfg.market_endpoint)
            self._dealer = context.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            # Refuse to queue orders while the gateway is unreachable: a late order is worse
            # than a rejected one.
            self._dealer.setsockopt(zmq.IMMEDIATE, 1)
            self._dealer.connect(cfg.order_endpoint)
            wake = f"inproc://zmq-connector-wake-{id(self)}"
            self._wake_pull = context.socket(zmq.PULL)
            self._wake_pull.setsockopt(zmq.LINGER, 0)
            self._wake_pull.bind(wake)
            self._wake_push = context.socket(zmq.PUSH)
            self._wake_push.setsockopt(zmq.LINGER, 0)
            self._wake_push.setsockopt(zmq.SNDHWM, 1)
            self._wake_push.connect(wake)
        except zmq.ZMQError as exc:
            self.disconnect()
            raise ConnectorError(f"cannot open sockets: {exc}", venue=self.name) from exc
        link = self._link
        self._thread = IoThread(f"zmq-connector-{self.name}", self._run,
                                lambda exc: link.lost(f"poller failed: {type(exc).__name__}: {exc}"))
        self._thread.start()

    def timeout_reason(self) -> str:
        cfg = self.zmq_config
        return (f"no heartbeat and pong from {cfg.order_endpoint} / {cfg.market_endpoint} "
                f"within {cfg.connect_timeout_s}s")

    def disconnect(self) -> None:
        """Stop and join the poller thread, close every socket (linger 0); idempotent."""
        thread, self._thread = self._thread, None
        self._stopping.set()
        if thread is not None:
            self._wake()
            if not thread.join(max(2.0, self.zmq_config.poll_interval_s * 10)):
                self.log.error(f"connector {self.name}: poller thread did not stop")
                return  # never close sockets under a live thread; the context leaks
        with self._wake_lock:
            for sock in (self._sub, self._dealer, self._wake_pull, self._wake_push):
                if sock is not None:
                    sock.close(linger=0)
            self._sub = self._dealer = self._wake_pull = self._wake_push = None
        if self._context is not None:
            self._context.term()
            self._context = None
        self._reject_unsent("venue session closed before the order was sent")

    def resync(self) -> None:
        """Ask for working orders, then every execution, then positions.

        Working orders are delivered as ``OrderAccepted`` (there is no other message for
        "this order works"), executions as ``OrderFilled`` (the base drops the ones already
        seen) and positions as ``VenuePositions`` with an empty request id. The order of the
        requests puts an order's acceptance before its fills.
        """
        self._send(wire.OpenOrdersRequest(req_id=_RESYNC))
        self._send(wire.ExecutionsRequest(req_id=_RESYNC))
        self._send(wire.PositionsRequest(req_id=_POSITIONS))

    def subscribe(self, symbols: Sequence[str]) -> None:
        """Subscribe to the quotes of ``symbols``."""
        self._command("subscribe", tuple(symbols))

    def submit(self, order: SubmitOrder) -> None:
        """Send a new order; refused at once (``VENUE_DOWN``) when the session is gone."""
        if self._lost.is_set() or self._thread is None:
            self._reject_down(order.client_order_id, order.symbol, "venue session is down")
            return
        if self._stale.is_set():
            self._reject_down(order.client_order_id, order.symbol, self._stale_text())
            return
        self._late.sent(order.client_order_id, now_ns())
        request = wire.NewOrderRequest(
            req_id=_NEW + order.client_order_id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            time_in_force=order.time_in_force,
            reduce_only=order.reduce_only,
            source=order.source,
            expire_ns=expire_time_ns(now_ns(), self.zmq_config.order_expiry_s),
        )
        self._send(request)

    def cancel(self, order: CancelOrder) -> None:
        """Ask the venue to cancel one order."""
        cid = order.client_order_id
        self._send(wire.CancelRequest(req_id=_CANCEL + cid, client_order_id=cid))

    def cancel_all(self, request_id: str) -> None:
        """Mass cancel; ``CancelAllDone`` is delivered when the venue confirms."""
        self._send(wire.CancelAllRequest(req_id=_CANCEL_ALL + request_id))
        self.count_out()

    def request_positions(self, request_id: str) -> None:
        """Ask for the working orders, then positions; ``VenuePositions`` with
        ``request_id`` is delivered, listing the working orders when the venue answered."""
        self._send(wire.OpenOrdersRequest(req_id=_WORKING + request_id))
        self._send(wire.PositionsRequest(req_id=_POSITIONS + request_id))
        self.count_out()

    def query_order_status(self, order: SubmitOrder) -> None:
        """``order_status`` for one order still unanswered (reply: ``_on_order_status``)."""
        cid = order.client_order_id
        self._send(wire.OrderStatusRequest(req_id=_STATUS + cid, client_order_id=cid))

    # ---- commands to the poller thread ---------------------------------------------------

    def _send(self, request: wire.Request) -> None:
        self._command("send", (request.req_id, wire.encoder.encode(request)))

    def _command(self, kind: str, item: Any) -> None:
        self._commands.put((kind, item))
        self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_push is None:
                return
            try:
                self._wake_push.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # a wake-up is already pending

    def _reject_unsent(self, text: str) -> None:
        """Refuse every new order still waiting in the command queue (actor thread)."""
        while True:
            try:
                kind, item = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "send" and item[0].startswith(_NEW):
                self.deliver(self._down_reject(item[0][len(_NEW):], "", text))

    def _reject_down(self, client_order_id: str, symbol: str, text: str) -> None:
        self.deliver(self._down_reject(client_order_id, symbol, text))

    def _down_reject(self, client_order_id: str, symbol: str, text: str) -> OrderRejected:
        return OrderRejected(
            client_order_id=client_order_id,
            venue=self.name,
            reason=RejectReason.VENUE_DOWN,
            text=text,
            symbol=symbol,
            ts_ns=now_ns(),
        )

    # ---- the poller thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._poll_loop()
        except Exception:  # the thread's last word (IoThread tells the link): the session is gone
            self.log.exception(f"connector {self.name}: poller failed")
            self._lost.set()
            raise
        finally:
            with self._wake_lock:
                for sock in (self._sub, self._dealer, self._wake_pull):
                    if sock is not None:
                        sock.close(linger=0)
                self._sub = self._dealer = self._wake_pull = None

    def _poll_loop(self) -> None:
        cfg = self.zmq_config
        sub, dealer, wake = self._sub, self._dealer, self._wake_pull
        assert sub is not None and dealer is not None and wake is not None
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(dealer, zmq.POLLIN)
        poller.register(wake, zmq.POLLIN)
        next_ping = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_ping:
                self._ping(dealer)
                # Until the first pong, retry fast: the connection may still be forming.
                next_ping = now + (cfg.ping_interval_s if self._ready.is_set() else 0.05)
            timeout_s = min(cfg.poll_interval_s, max(0.0, next_ping - now))
            ready = dict(poller.poll(int(timeout_s * 1000)))
            if wake in ready:
                _drain(wake)
            self._run_commands(sub, dealer)
            if dealer in ready:
                self._read_orders(dealer)
            quotes: list[Quote] = []
            if sub in ready:
                self._read_market(sub, quotes)
            self._expire_held(quotes)
            if quotes:
                self._tell(QuoteBatch(venue=self.name, quotes=tuple(quotes), recv_ns=now_ns()))
            if self._lost.is_set():
                return
            self._check_liveness()
            if self._lost.is_set():
                return

    def _check_liveness(self) -> None:
        if not self._ready.is_set():
            return  # connect() owns the deadline until the session is up
        cfg = self.zmq_config
        now = time.monotonic()
        if now - self._last_heartbeat > cfg.stale_after_s:
            self._lose(f"no venue heartbeat for {now - self._last_heartbeat:.1f}s")
        else:
            self._check_probe(now)

    def _lose(self, reason: str) -> None:
        if self._lost.is_set():
            return
        self._lost.set()
        self._link.lost(reason)

    def _tell(self, message: Any) -> None:
        self._link.tell(message)

    def _ping(self, dealer: zmq.Socket[bytes]) -> None:
        request = wire.PingRequest(req_id=f"{_PING}{next(self._ping_ids)}", ts_ns=now_ns())
        try:
            dealer.send(wire.encoder.encode(request), zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected (yet); liveness checks decide what that means

    def _run_commands(self, sub: zmq.Socket[bytes], dealer: zmq.Socket[bytes]) -> None:
        while True:
            try:
                kind, item = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind == "subscribe":
                for symbol in item:
                    if symbol not in self._subscribed:
                        sub.setsockopt(zmq.SUBSCRIBE, symbol.encode())
                        self._subscribed.add(symbol)
            elif kind == "send":
                req_id, payload = item
                if req_id.startswith(_NEW) and self._refused_stale(req_id):
                    continue
                try:
                    dealer.send(payload, zmq.NOBLOCK)
                except zmq.Again:
                    self._unsendable(req_id)

    def _unsendable(self, req_id: str) -> None:
        self.count_error()
        if req_id.startswith(_NEW):
            self._tell(self._down_reject(req_id[len(_NEW):], "", "order gateway not connected"))
        else:
            self.log.warning(f"connector {self.name}: request {req_id} not sent: not connected")

    # ---- market data ---------------------------------------------------------------------

    def _read_market(self, sub: zmq.Socket[bytes], quotes: list[Quote]) -> None:
        for _ in range(self.zmq_config.max_batch):
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._on_market_frames(frames, quotes)
            except (ValueError, UnicodeDecodeError, msgspec.DecodeError) as exc:
                self.count_malformed(f"market data: {exc}")

    def _on_market_frames(self, frames: list[bytes], quotes: list[Quote]) -> None:
        if len(frames) != 2:
            raise ValueError(f"expected [topic, payload], got {len(frames)} frame(s)")
        topic = frames[0].decode()
        frame = wire.market_decoder.decode(frames[1])
        if isinstance(frame, wire.HeartbeatFrame):
            if topic != wire.HEARTBEAT_TOPIC:
                raise ValueError(f"heartbeat on topic {topic!r}")
            self.count_in()
            if self._check_session(frame.session, "heartbeat"):
                self._last_heartbeat = time.monotonic()
                self._mark_ready_if_complete()
            return
        if topic != frame.symbol:
            raise ValueError(f"quote for {frame.symbol!r} on topic {topic!r}")
        if topic not in self._subscribed:
            return  # a longer symbol sharing a subscribed prefix
        if not self._check_session(frame.session, "quote"):
            return
        quote = Quote(
            venue=self.name,
            symbol=frame.symbol,
            bid=frame.bid,
            ask=frame.ask,
            bid_size=frame.bid_size,
            ask_size=frame.ask_size,
            seq=frame.seq,
            ts_ns=frame.ts_ns,
        )
        self._sequence(quote, quotes)

    def _check_session(self, session: str, what: str) -> bool:
        """True for the current venue session; learns it first; a change is a lost session."""
        if not self.session:
            self.session = session
            return True
        if session == self.session:
            return True
        self._lose(f"venue restarted: {what} from session {session}, expected {self.session}")
        return False

    def _sequence(self, quote: Quote, out: list[Quote]) -> None:
        state = self._topics.get(quote.symbol)
        if state is None:
            state = self._topics[quote.symbol] = _TopicState()
        if state.expected is None:
            state.expected = quote.seq
        seq = quote.seq
        if seq < state.expected or seq in state.held:
            if not self._behind(quote, state, out):
                self.count_drop()
            return
        state.behind_run = 0
        if seq > state.expected:
            if not state.held:
                state.held_since = time.monotonic()
            state.held[seq] = quote
            if len(state.held) > self.zmq_config.reorder_window:
                self._skip_gap(quote.symbol, state, out)
            return
        out.append(quote)
        state.expected = seq + 1
        self._release(state, out)

    def _behind(self, quote: Quote, state: _TopicState, out: list[Quote]) -> bool:
        """A frame behind the expected number: a duplicate, unless it completes a run of
        ``resync_after`` frames in sequence, which resynchronises the topic (True)."""
        seq = quote.seq
        if seq in state.held:
            return False
        if state.behind_run and seq == state.behind_last + 1:
            state.behind_run += 1
        else:
            state.behind_run = 1
        state.behind_last = seq
        if state.behind_run < self.zmq_config.resync_after:
            return False
        expected = state.expected
        self.report_sequence_problem(
            "sequence_reset", quote.symbol,
            f"{state.behind_run} consecutive frames up to seq {seq} behind the expected seq "
            f"{expected}: resynchronised to the stream ({len(state.held)} held frames dropped)",
        )
        self.count_drop(len(state.held))
        state.held.clear()
        state.behind_run = 0
        state.expected = seq + 1
        out.append(quote)
        return True

    def _release(self, state: _TopicState, out: list[Quote]) -> None:
        assert state.expected is not None
        while state.expected in state.held:
            out.append(state.held.pop(state.expected))
            state.expected += 1
        if state.held:
            state.held_since = time.monotonic()

    def _skip_gap(self, symbol: str, state: _TopicState, out: list[Quote]) -> None:
        assert state.expected is not None
        first = min(state.held)
        self.report_gap(symbol, state.expected, first)
        state.expected = first
        self._release(state, out)

    def _expire_held(self, out: list[Quote]) -> None:
        limit = time.monotonic() - self.zmq_config.reorder_timeout_s
        for symbol, state in self._topics.items():
            if state.held and state.held_since <= limit:
                self._skip_gap(symbol, state, out)

    # ---- order channel -------------------------------------------------------------------------

    def _read_orders(self, dealer: zmq.Socket[bytes]) -> None:
        for _ in range(self.zmq_config.max_batch):
            try:
                frames = dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                if len(frames) != 1:
                    raise ValueError(f"expected 1 frame, got {len(frames)}")
                frame = wire.order_channel_decoder.decode(frames[0])
                self._frame_handlers[type(frame)](frame)
            except (ValueError, msgspec.DecodeError) as exc:
                self.count_malformed(f"order channel: {exc}")
            except Exception:  # a bug in one handler must not kill the reader
                self.count_error()
                self.log.exception(f"connector {self.name}: order channel frame failed")

    def _order_handlers(self) -> dict[type, Callable[[Any], None]]:
        """Order channel frame type -> handler (poller thread)."""
        return {
            wire.AcceptedEvent: self._on_accepted,
            wire.RejectedEvent: self._on_rejected,
            wire.FilledEvent: lambda f: self._tell(_fill_message(self.name, f)),
            wire.CancelledEvent: self._on_cancelled,
            wire.CancelRejectedEvent: self._on_cancel_rejected,
            wire.PositionsReply: self._on_positions,
            wire.ExecutionsReply: self._on_executions,
            wire.OpenOrdersReply: self._on_open_orders,
            wire.CancelAllDoneReply: self._on_cancel_all_done,
            wire.OrderStatusReply: self._on_order_status,
            wire.PongReply: self._on_pong,
            wire.ErrorReply: self._on_error,
        }

    def _on_accepted(self, frame: wire.AcceptedEvent) -> None:
        self._tell(
            OrderAccepted(
                client_order_id=frame.client_order_id,
                venue=self.name,
                symbol=frame.symbol,
                venue_order_id=frame.venue_order_id,
                ts_ns=frame.ts_ns,
            )
        )

    def _on_rejected(self, frame: wire.RejectedEvent) -> None:
        self._tell(
            OrderRejected(
                client_order_id=frame.client_order_id,
                venue=self.name,
                reason=frame.reason,
                text=frame.text,
                symbol=frame.symbol,
                ts_ns=frame.ts_ns,
            )
        )

    def _on_cancelled(self, frame: wire.CancelledEvent) -> None:
        self._tell(
            OrderCancelled(
                client_order_id=frame.client_order_id,
                venue=self.name,
                symbol=frame.symbol,
                text=frame.text,
                ts_ns=frame.ts_ns,
                expired=frame.expired,
            )
        )

    def _on_cancel_rejected(self, frame: wire.CancelRejectedEvent) -> None:
        # The order keeps its state (usually it just filled); there is no event to publish.
        self.count_error()
        self.log.bind(client_order_id=frame.client_order_id, text=frame.text).warning(
            f"connector {self.name}: cancel refused by the venue"
        )

    def _on_positions(self, frame: wire.PositionsReply) -> None:
        positions = tuple(
            VenuePosition(
                venue=self.name,
                symbol=p.symbol,
                quantity=p.quantity,
                average_price=p.average_price,
            )
            for p in frame.positions
        )
        request_id = frame.req_id.removeprefix(_POSITIONS)
        self._tell(
            VenuePositions(
                venue=self.name,
                positions=positions,
                request_id=request_id,
                ts_ns=frame.ts_ns,
                open_orders=self._working_lists.pop(request_id, None),
            )
        )

    def _on_executions(self, frame: wire.ExecutionsReply) -> None:
        fills = [_fill_message(self.name, f) for f in frame.fills]  # all valid, or none told
        for fill in fills:
            self._tell(fill)

    def _on_open_orders(self, frame: wire.OpenOrdersReply) -> None:
        if self._keep_working_list(frame):
            return
        accepted = [
            OrderAccepted(
                client_order_id=order.client_order_id,
                venue=self.name,
                symbol=order.symbol,
                venue_order_id=order.venue_order_id,
                ts_ns=frame.ts_ns,
            )
            for order in frame.orders
        ]
        for message in accepted:
            self._tell(message)

    def _keep_working_list(self, frame: wire.OpenOrdersReply) -> bool:
        """Keep the venue's working orders for the positions reply that follows: the one
        asked with a positions request (True: nothing else to do), and the resync's (whose
        positions request has the empty id; its orders are also acknowledged)."""
        if frame.req_id == _RESYNC:
            request_id = ""
        elif frame.req_id.startswith(_WORKING):
            request_id = frame.req_id.removeprefix(_WORKING)
        else:
            return False
        self._working_lists[request_id] = tuple(sorted({o.client_order_id for o in frame.orders}))
        while len(self._working_lists) > _MAX_WORKING_LISTS:
            self._working_lists.pop(next(iter(self._working_lists)))
        if frame.req_id == _RESYNC:
            self._query_unlisted(set(self._working_lists[request_id]))
        return frame.req_id != _RESYNC

    def _query_unlisted(self, listed: set[str]) -> None:
        """At the resync: the journal's orders of this venue that the venue acknowledged and
        no longer lists as working are asked about (``order_status``), so one that ended
        while the connector was down (cancelled, expired, rejected, filled) ends in the
        journal too; the answer goes through ``_on_order_status``. Orders never acknowledged
        are the in-flight tracking's. Read only; a journal that cannot be read is logged."""
        records = self.journal_orders()
        if records is None:
            return
        unlisted = [r.order.client_order_id for r in records
                    if r.status is not OrderStatus.PENDING
                    and r.order.client_order_id not in listed]
        for cid in unlisted:
            self._send(wire.OrderStatusRequest(req_id=_STATUS + cid, client_order_id=cid))
        if unlisted:
            self.log.warning(f"connector {self.name}: {len(unlisted)} order(s) working in the journal "
                             f"and not at the venue asked about: {', '.join(unlisted[:20])}")

    def _on_order_status(self, frame: wire.OrderStatusReply) -> None:
        """The venue's word on one order asked about: unknown (it never reached the venue:
        rejected, with a WARNING), working (accepted), or done (its executions are asked
        for, so no fill is missed, and a cancel is delivered). ``pending`` (received, not at
        the book yet) is no answer: the order stays in flight."""
        cid, status = frame.client_order_id, frame.status
        if not frame.known:
            for message in self.lost_order_events(cid, frame.symbol, "order_status: unknown order"):
                self._tell(message)
            return
        self.log.bind(client_order_id=cid, status=str(status), filled=str(frame.filled)).info(
            f"connector {self.name}: order status answered")
        if status is OrderStatus.PENDING:
            return
        if frame.filled > 0:  # the executions carry the fills (the base drops those seen)
            self._send(wire.ExecutionsRequest(req_id=_STATUS + cid))
        if status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            self._tell(OrderAccepted(client_order_id=cid, venue=self.name, symbol=frame.symbol,
                                     venue_order_id=frame.venue_order_id, ts_ns=frame.ts_ns))
        elif status is OrderStatus.REJECTED:
            self._tell(OrderRejected(client_order_id=cid, venue=self.name, reason=RejectReason.VENUE,
                                     text="rejected (order status)", symbol=frame.symbol,
                                     ts_ns=frame.ts_ns))
        elif status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
            self._tell(OrderCancelled(client_order_id=cid, venue=self.name, symbol=frame.symbol,
                                      text=f"{status} (order status)", ts_ns=frame.ts_ns))

    def _on_cancel_all_done(self, frame: wire.CancelAllDoneReply) -> None:
        request_id = frame.req_id.removeprefix(_CANCEL_ALL)
        self._tell(CancelAllDone(venue=self.name, request_id=request_id, ts_ns=frame.ts_ns))

    def _on_pong(self, frame: wire.PongReply) -> None:
        self.count_in()
        self.note_latency((now_ns() - frame.ts_ns) / 1e6)
        if self._check_session(frame.session, "pong"):
            self._last_pong = time.monotonic()
            self._mark_ready_if_complete()
            self._probe_answered(self._last_pong)

    def _on_error(self, frame: wire.ErrorReply) -> None:
        self.count_error()
        self.log.bind(req_id=frame.req_id, code=frame.code, text=frame.text).warning(
            f"connector {self.name}: the venue refused a request"
        )
        if frame.req_id.startswith(_NEW):
            self._tell(
                OrderRejected(
                    client_order_id=frame.req_id[len(_NEW):],
                    venue=self.name,
                    reason=RejectReason.VENUE,
                    text=f"{frame.code}: {frame.text}",
                    ts_ns=now_ns(),
                )
            )

    def _mark_ready_if_complete(self) -> None:
        if self._last_heartbeat and self._last_pong and not self._ready.is_set():
            self._ready.set()
            self.log.info(f"connector {self.name}: connected to venue session {self.session}")
            self._link.up()


    # ---- staleness, late acknowledgements -----------------------------------------------------

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        table = super().handlers()
        for acknowledgement in (OrderAccepted, OrderFilled, OrderRejected, OrderCancelled):
            table[acknowledgement] = self._deliver_checking_delay
        return table

    def _deliver_checking_delay(self, message: Any) -> None:
        """Publish an order event; the first acknowledgement (accepted or filled) of an order
        later than ``late_ack_warn_s`` after its sending raises a WARNING naming both."""
        self.deliver_checking_delay(self._late, message)

    def _stale_text(self) -> str:
        probe = self._probe
        silent = probe.silent_s(time.monotonic()) if probe is not None else 0.0
        return f"venue session stale: no pong for {silent:.1f}s"

    def _probe_answered(self, now: float) -> None:
        """A pong of this session (poller thread): the probe starts with the first."""
        cfg = self.zmq_config
        if self._probe is None:
            self._probe = SessionProbe(interval_s=cfg.ping_interval_s, timeout_s=cfg.probe_timeout_s,
                                       dead_after_s=cfg.stale_after_s + cfg.ping_interval_s, now=now)
            return
        stale_s = self._probe.answered(now)
        self._stale.clear()
        if stale_s is not None:
            self.log.warning(f"connector {self.name}: venue answers pings again after {stale_s:.1f}s stale")

    def _check_probe(self, now: float) -> None:
        """Stale once a ping is overdue (no new order is written); dead after
        ``stale_after_s + ping_interval_s`` without a pong: reset and lost (poller thread)."""
        probe = self._probe
        if probe is None:
            return
        state = probe.state(now)
        if state is Liveness.LIVE:
            return
        self._note_stale(probe, now)
        if state is Liveness.DEAD:
            self._abort()
            self._lose(f"no answer to pings for {probe.silent_s(now):.1f}s")

    def _note_stale(self, probe: SessionProbe, now: float) -> None:
        self._stale.set()
        if probe.note(now):
            self.log.warning(f"connector {self.name}: venue session stale: no pong for "
                             f"{probe.silent_s(now):.1f}s; new orders are refused")

    def _refused_stale(self, req_id: str) -> bool:
        """At the moment of writing a new order (poller thread): refuse it when a ping is
        overdue, so nothing new goes into a link that may deliver it much later."""
        probe = self._probe
        now = time.monotonic()
        if probe is None or probe.takes_orders(now):
            return False
        self._note_stale(probe, now)
        self._tell(self._down_reject(req_id[len(_NEW):], "", self._stale_text()))
        return True

    def _abort(self) -> None:
        """``SO_LINGER`` 0 on the order channel's TCP connection, so that closing the dead
        session resets it and the kernel drops what it has not sent (ZeroMQ's own
        ``LINGER`` 0 only drops the messages libzmq still queues)."""
        endpoint = self.zmq_config.order_endpoint
        if not endpoint.startswith("tcp://"):
            return  # ipc: nothing is in flight on a network
        host, _, port = endpoint[len("tcp://"):].rpartition(":")
        if port.isdigit():
            linger_zero(host.strip("[]"), int(port), self.log, f"connector {self.name}")


def _fill_message(venue: str, frame: wire.FilledEvent) -> OrderFilled:
    return OrderFilled(
        client_order_id=frame.client_order_id,
        venue=venue,
        fill_id=frame.fill_id,
        symbol=frame.symbol,
        side=frame.side,
        quantity=frame.quantity,
        price=frame.price,
        leaves_quantity=frame.leaves,
        venue_order_id=frame.venue_order_id,
        ts_ns=frame.ts_ns,
    )


def _drain(sock: zmq.Socket[bytes]) -> None:
    while True:
        try:
            sock.recv(zmq.NOBLOCK)
        except zmq.Again:
            return
