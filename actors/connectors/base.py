"""The connector contract.

A connector owns one venue session. Its I/O runs in a thread it owns (quickfix's own
threads, a ZeroMQ poller, an asyncio loop for ib_insync); that thread hands inbound
events to the actor through a ``SessionLink`` (``inbound``, ``session_up``,
``session_lost``) and the actor's mailbox serialises all state.

A connector that cannot reach its venue is running and disconnected. ``setup`` only
starts the first connection attempt and returns at once, so a venue that is down never
holds up the supervision tree. Each attempt is ``connect`` (start opening the session,
without waiting for it), then ``session_up`` from the I/O side within
``connect_timeout_s``; then ``resync`` and ``subscribe`` run and ``ConnectorUp`` is
published. An attempt that fails (``connect`` raises ``ConnectorError``, the I/O side
calls ``session_lost``, or the deadline passes) is closed with ``disconnect`` and the
next one is scheduled after a backoff delay (tenacity's exponential wait with jitter,
capped; a timer, never a sleep in a handler).

Losing the session while connected is handled the same way, inside the actor: the
session is closed, ``ConnectorDown`` is published and reconnection starts with backoff.
``ConnectorDown`` is published once per outage (when an up session is lost, or when the
first attempt of a connector that was never up fails) and ``ConnectorUp`` once when it
ends, so an outage is one incident however many attempts it takes. Only a crash of the
actor itself (an exception in a handler) ends the actor; its supervisor restarts it.

While disconnected, orders are refused at once (``VENUE_DOWN``); cancels, mass cancels
and position requests are counted as errors and logged (nothing is answered, as for a
venue that does not answer).

Orders in flight (``core.inflight``): every order written to the venue is tracked until
the connector delivers the venue's first word about it (accepted, rejected, filled,
cancelled). One still unanswered ``inflight_timeout_s`` after it was sent is queried at
the venue (``query_order_status``, the connector's status request), again after each
further ``inflight_timeout_s``, up to ``inflight_retries`` queries; the answer arrives as
an ordinary order event. When the queries are spent the order is given up: a cancel for
it is sent to the venue (in case it arrives later), ``order_given_up`` lets the connector
forget it, it is ended with ``OrderCancelled`` (text ``lost in flight: ...``), a WARNING
``SafetyEvent`` of kind ``order_lost_in_flight`` is raised and the venue's positions are
requested at once (a reconciliation). No query is sent while the session is down; the
session coming back restarts each order's wait (docs/operations.md, "In-flight orders").

Every connector implements ``connect``, ``disconnect``, ``resync``, ``subscribe``,
``submit``, ``cancel``, ``cancel_all`` and ``request_positions``. The base routes told
commands to them, publishes what the venue says on the bus, drops duplicate fills, keeps
the health counters and publishes a ``HealthReport`` every ``health_interval_s``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import pykka
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.connectors._io import SessionLink, SessionLost, SessionUp
from actors.connectors._staleness import late_event
from actors.errors import ConnectorError, JournalError
from actors.journal import READER, Journal, OrderRecord
from core.inflight import GiveUp, InflightOrders, QueryStatus
from core.staleness import LateAcks
from messages import (
    CancelAll,
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    HealthReport,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    QuoteBatch,
    RejectReason,
    RequestPositions,
    SafetyEvent,
    Severity,
    SubmitOrder,
    VenuePositions,
    now_ns,
)
from messages.bounds import Name, Symbol
from supervision import Backoff, SupervisedActor, TimerHandle, bus, scheduler


class ConnectorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings every connector has; each connector extends it with its own fields."""

    name: Name
    """Instance name: the ``venue`` of every message it emits and its registry name."""
    kind: str
    """Which connector: ``paper``, ``zmq``, ``fix``, ``ibkr`` or a plug-in's kind."""
    symbols: tuple[Symbol, ...] = ()
    """Symbols subscribed on every (re)connect."""
    connect_timeout_s: Annotated[float, Meta(ge=0.1, le=3600.0)] = 5.0
    """How long one connection attempt may take before it counts as failed (and the next
    one is scheduled with backoff). At least 0.1."""
    health_interval_s: Annotated[float, Meta(ge=0.01, le=3600.0)] = 1.0
    """How often a ``HealthReport`` is published. At least 0.01."""
    reconnect_initial_s: float = 0.5
    """Delay before the first reconnection attempt of an outage (before jitter). 0.01 to
    ``reconnect_max_s``."""
    reconnect_max_s: float = 30.0
    """Cap on a reconnection delay. At least 0.01."""
    reconnect_multiplier: float = 2.0
    """Growth of the delay per consecutive failed attempt. 1 to 10."""
    reconnect_jitter_s: float = 0.25
    """Random jitter added to each delay, up to this many seconds (the cap still holds).
    0 or more."""
    reconnect_reset_after_s: float = 30.0
    """A session up this long before it is lost reconnects from ``reconnect_initial_s``
    again; a shorter one continues the growing delays (a flapping venue backs off). Above 0."""
    inflight_timeout_s: Annotated[float, Meta(ge=0.05, le=3600.0)] = 5.0
    """How long an order sent may go unanswered by the venue before its status is queried
    there, and the wait after each query. At least 0.05."""
    inflight_retries: Annotated[int, Meta(ge=0, le=100)] = 3
    """Status queries for an unanswered order before it is given up: cancelled at the
    venue, ended as cancelled (``lost in flight``), the venue reconciled at once, a WARNING
    raised. 0 gives up after one ``inflight_timeout_s`` without a query."""

    def __post_init__(self) -> None:
        _check_range("connect_timeout_s", self.connect_timeout_s, 0.1)
        _check_range("health_interval_s", self.health_interval_s, 0.01)
        _check_range("reconnect_max_s", self.reconnect_max_s, 0.01)
        _check_range("reconnect_initial_s", self.reconnect_initial_s, 0.01, self.reconnect_max_s)
        _check_range("reconnect_multiplier", self.reconnect_multiplier, 1.0, 10.0)
        _check_range("reconnect_jitter_s", self.reconnect_jitter_s, 0.0)
        _check_range("reconnect_reset_after_s", self.reconnect_reset_after_s, 0.001)
        _check_range("inflight_timeout_s", self.inflight_timeout_s, 0.05, 3600.0)
        if not 0 <= self.inflight_retries <= 100:
            raise ValueError(f"inflight_retries: must be within 0..100, got {self.inflight_retries}")

    def reconnect_backoff(self) -> Backoff:
        """The reconnection delays as the supervision kernel's backoff policy (tenacity)."""
        return Backoff(initial_s=self.reconnect_initial_s, maximum_s=self.reconnect_max_s,
                       multiplier=self.reconnect_multiplier, jitter_s=self.reconnect_jitter_s,
                       reset_after_s=self.reconnect_reset_after_s)


def _check_range(field: str, value: float, low: float, high: float | None = None) -> None:
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"within {low}..{high}" if high is not None else f"at least {low}"
        raise ValueError(f"{field}: must be finite and {bound}, got {value}")


JOURNAL_NAME = "journal.sqlite3"
"""The journal's file name in the state directory (the keeper's default ``journal_name``),
for a connector whose config has no ``journal`` field of its own."""


class _ConnectDeadline(msgspec.Struct, frozen=True):
    attempt: int


class _Reconnect(msgspec.Struct, frozen=True):
    attempt: int


class _HealthTick(msgspec.Struct, frozen=True):
    pass


class _InflightDue(msgspec.Struct, frozen=True):
    token: int


Phase = Literal["connecting", "up", "waiting", "stopped"]
"""Where the connector is: an attempt under way, the session up, waiting for the next
attempt, or stopped."""


class Connector(SupervisedActor):
    """Base of every connector actor."""

    kind: ClassVar[str] = ""
    config_type: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: ConnectorConfig, state_dir: Path) -> None:
        super().__init__()
        self.config = config
        self.state_dir = Path(state_dir)
        self.log = logger.bind(channel="connectors", connector=config.name)
        self._lock = threading.Lock()
        self._counts = {"in": 0, "out": 0, "drops": 0, "errors": 0, "malformed": 0, "gaps": 0, "fills": 0}
        self._latency_ms = 0.0
        self._last_message_ns = 0
        self._connected = False
        self._seen_fills: set[str] = set()
        self._health_timer: TimerHandle | None = None
        # Connection state (actor thread).
        self.link = SessionLink(None, 0)
        """The hand-off of the current connection attempt. ``connect`` gives it to the I/O
        thread it starts; a closed link (an old session's) reaches nobody."""
        self.phase: Phase = "waiting"
        self._attempt = 0
        self._failures = 0
        self._outage_reported = False
        self._outage_since = 0.0
        self._up_since = 0.0
        self._timer: TimerHandle | None = None
        self._backoff = config.reconnect_backoff()
        # Orders in flight (actor thread).
        self._inflight = InflightOrders(config.inflight_timeout_s, config.inflight_retries)
        self._inflight_orders: dict[str, SubmitOrder] = {}
        self._inflight_timer: TimerHandle | None = None
        self._inflight_at = math.inf
        self._inflight_token = 0
        self._journal_checked = False

    @property
    def name(self) -> str:
        """The connector's name (also the venue name in its messages)."""
        return self.config.name

    @property
    def connected(self) -> bool:
        """True while the venue session is up and synchronised."""
        return self._connected

    # ---- the contract: implemented by each connector (actor thread) -----------------

    def connect(self) -> None:
        """Start opening the session and return without waiting for it: the I/O side calls
        ``session_up`` when it is open, ``session_lost`` when it cannot be; raise
        ``ConnectorError`` when the attempt fails at once. The base gives up on the attempt
        after ``connect_timeout_s``."""
        raise NotImplementedError

    def disconnect(self) -> None:
        """Close sockets, stop and join I/O threads; idempotent, safe after a half-done connect."""
        raise NotImplementedError

    def resync(self) -> None:
        """After a connect: re-request executions, open orders and positions, and deliver them."""
        raise NotImplementedError

    def subscribe(self, symbols: Sequence[str]) -> None:
        """Subscribe to market data for ``symbols``."""
        raise NotImplementedError

    def submit(self, order: SubmitOrder) -> None:
        """Send a new order to the venue."""
        raise NotImplementedError

    def cancel(self, order: CancelOrder) -> None:
        """Ask the venue to cancel one order."""
        raise NotImplementedError

    def cancel_all(self, request_id: str) -> None:
        """Mass-cancel at the venue; deliver ``CancelAllDone`` when the venue confirms."""
        raise NotImplementedError

    def request_positions(self, request_id: str) -> None:
        """Ask the venue for its positions; deliver ``VenuePositions`` with ``request_id``."""
        raise NotImplementedError

    def timeout_reason(self) -> str:
        """Why an attempt that reached its deadline failed, for the log (override to name
        the venue's address)."""
        return f"no session within {self.config.connect_timeout_s}s"

    def query_order_status(self, order: SubmitOrder) -> None:
        """Ask the venue for the state of ``order``, sent and still unanswered; deliver the
        answer as an order event (``OrderAccepted`` while it works, its fills, or the
        terminal event; ``lost_order_events`` when the venue does not know it). The default
        sends nothing: such a connector's orders are given up after the retries."""
        self.log.debug(f"connector {self.name}: no status query for {order.client_order_id}")

    def order_given_up(self, client_order_id: str) -> None:
        """The in-flight policy ended ``client_order_id`` (its cancel already sent): forget
        what the connector keeps about it. The default keeps nothing."""

    def lost_order_events(self, client_order_id: str, symbol: str, venue_words: str
                          ) -> tuple[OrderRejected, SafetyEvent]:
        """What a connector delivers when its venue answers a status query with "unknown
        order": the order never reached the venue. It ends rejected, with a WARNING. Any
        thread (it only builds the messages)."""
        detail = f"order {client_order_id} never reached the venue ({venue_words}): resolved as rejected"
        self.log.warning(f"connector {self.name}: {detail}")
        ts = now_ns()
        return (
            OrderRejected(client_order_id=client_order_id, venue=self.name, reason=RejectReason.VENUE,
                          text=f"never reached the venue: {venue_words}", symbol=symbol, ts_ns=ts),
            SafetyEvent(kind="order_lost", severity=Severity.WARNING, venue=self.name, symbol=symbol,
                        detail=detail, ts_ns=ts),
        )

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        bus.publish(topics.HEALTH, self.health())  # disconnected until the session is up
        self._schedule_health()
        self._outage_since = time.monotonic()
        self._begin_attempt()

    def teardown(self) -> None:
        self.phase = "stopped"
        was_connected, self._connected = self._connected, False
        if self._inflight:
            self.log.warning(f"connector {self.name} stopped with {len(self._inflight)} order(s) "
                             f"unanswered: {', '.join(self._inflight.in_flight()[:20])}")
        for timer in (self._health_timer, self._timer, self._inflight_timer):
            if timer is not None:
                timer.cancel()
        self.link.close()
        try:
            self.disconnect()
        finally:
            if was_connected:
                bus.publish(topics.CONNECTORS, ConnectorDown(name=self.name, reason="connector stopped",
                                                             ts_ns=now_ns(), lost=False))
                bus.publish(topics.HEALTH, self.health())

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            SubmitOrder: self._on_submit,
            CancelOrder: self._on_cancel,
            CancelAll: self._on_cancel_all,
            RequestPositions: self._on_request_positions,
            QuoteBatch: self.deliver,
            OrderAccepted: self.deliver,
            OrderRejected: self.deliver,
            OrderFilled: self.deliver,
            OrderCancelled: self.deliver,
            CancelAllDone: self.deliver,
            VenuePositions: self.deliver,
            SafetyEvent: self.deliver,
            SessionUp: self._on_session_up,
            SessionLost: self._on_session_lost,
            _ConnectDeadline: self._on_connect_deadline,
            _Reconnect: self._on_reconnect,
            _HealthTick: self._on_health_tick,
            _InflightDue: self._on_inflight_due,
        }

    # ---- connecting, reconnecting (actor thread) -------------------------------------

    def _begin_attempt(self) -> None:
        """Start connection attempt number ``_attempt + 1``."""
        self._attempt += 1
        self.link = SessionLink(self.actor_ref, self._attempt, self._note_inbound)
        self.phase = "connecting"
        try:
            self.connect()
        except ConnectorError as exc:
            self._attempt_failed(str(exc))
            return
        # Armed once connect() returned: loading what the session needs (a FIX data
        # dictionary, say) does not eat into the time the venue has to answer.
        self._arm(self.config.connect_timeout_s, _ConnectDeadline(self._attempt))

    def _on_session_up(self, message: SessionUp) -> None:
        if message.attempt != self._attempt or self.phase != "connecting":
            return  # a late word from an attempt already given up
        self._cancel_timer()
        self.phase = "up"
        self._connected = True
        self._up_since = time.monotonic()
        # Every session re-reads the venue's executions and publishes them again (the journal
        # drops those it has): a fill a subscriber missed gets another chance.
        self._seen_fills.clear()
        if not self._journal_checked:
            self._journal_checked = True
            self._track_journal_pending()
        try:
            self.resync()
            if self.config.symbols:
                self.subscribe(self.config.symbols)
        except ConnectorError as exc:
            self._lose_session(f"resynchronisation failed: {exc}")
            return
        self._inflight.session_up(time.monotonic())
        self._arm_inflight()
        bus.publish(topics.CONNECTORS,
                    ConnectorUp(name=self.name, generation=self.context.generation, ts_ns=now_ns()))
        if self._outage_reported:
            self.log.warning(f"connector {self.name} up after an outage of "
                             f"{time.monotonic() - self._outage_since:.1f}s "
                             f"(attempt {self._attempt}, generation {self.context.generation})")
        else:
            self.log.info(f"connector {self.name} up (generation {self.context.generation})")
        self._outage_reported = False
        bus.publish(topics.HEALTH, self.health())

    def _on_session_lost(self, message: SessionLost) -> None:
        if message.attempt != self._attempt:
            return
        if self.phase == "up":
            self._lose_session(message.reason)
        elif self.phase == "connecting":
            self._attempt_failed(message.reason)

    def _on_connect_deadline(self, message: _ConnectDeadline) -> None:
        if message.attempt == self._attempt and self.phase == "connecting":
            self._attempt_failed(self.timeout_reason())

    def _on_reconnect(self, message: _Reconnect) -> None:
        if message.attempt == self._attempt and self.phase == "waiting":
            self._begin_attempt()

    def _lose_session(self, reason: str) -> None:
        """The up session is gone: an outage begins; reconnect with backoff."""
        if time.monotonic() - self._up_since >= self.config.reconnect_reset_after_s:
            self._failures = 0
        self._connected = False
        self._outage_since = time.monotonic()
        self._outage_reported = True
        self._inflight.session_lost()
        self._arm_inflight()
        self.log.warning(f"connector {self.name} lost its session: {reason}")
        bus.publish(topics.CONNECTORS, ConnectorDown(name=self.name, reason=reason, ts_ns=now_ns()))
        self._close_session()
        bus.publish(topics.HEALTH, self.health())
        self._retry_later()

    def _attempt_failed(self, reason: str) -> None:
        """A connection attempt failed: close what it opened; try again with backoff."""
        self._cancel_timer()
        self._close_session()
        self._failures += 1
        delay = self._backoff.delay(self._failures)
        if not self._outage_reported:
            self._outage_reported = True
            self.log.warning(f"connector {self.name} cannot reach its venue: {reason}; "
                             f"retrying in {delay:.2f}s")
            bus.publish(topics.CONNECTORS, ConnectorDown(name=self.name, reason=reason, ts_ns=now_ns()))
            bus.publish(topics.HEALTH, self.health())
        else:
            self.log.info(f"connector {self.name}: attempt {self._attempt} failed: {reason}; "
                          f"retrying in {delay:.2f}s")
        self._schedule_attempt(delay)

    def _retry_later(self) -> None:
        self._failures += 1
        self._schedule_attempt(self._backoff.delay(self._failures))

    def _schedule_attempt(self, delay_s: float) -> None:
        self.phase = "waiting"
        self._arm(delay_s, _Reconnect(self._attempt))

    def _close_session(self) -> None:
        self.link.close()
        try:
            self.disconnect()
        except Exception:  # a failed close must not stop the reconnecting
            self.count_error()
            self.log.exception(f"connector {self.name}: disconnect failed")

    def _arm(self, delay_s: float, message: Any) -> None:
        """Tell this actor ``message`` after ``delay_s`` (replaces the pending timer)."""
        self._cancel_timer()
        self._timer = scheduler.call_later(delay_s, _teller(self.actor_ref, message))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- commands (actor thread) ------------------------------------------------------

    def _on_submit(self, order: SubmitOrder) -> None:
        if not self._connected:
            self.deliver(OrderRejected(client_order_id=order.client_order_id, venue=self.name,
                                       reason=RejectReason.VENUE_DOWN,
                                       text=f"connector {self.name} is not connected to its venue",
                                       symbol=order.symbol, source=order.source, ts_ns=now_ns()))
            return
        # Tracked before it is written: a refusal delivered by ``submit`` ends the tracking.
        self._track_sent(order)
        try:
            self.submit(order)
        except ConnectorError as exc:
            self.deliver(OrderRejected(client_order_id=order.client_order_id, venue=self.name,
                                       reason=RejectReason.VENUE_DOWN, text=str(exc),
                                       symbol=order.symbol, source=order.source, ts_ns=now_ns()))
            self._command_failed("submit", exc)
            return
        self.count_out()

    def _on_cancel(self, order: CancelOrder) -> None:
        if self._refused_while_down(f"cancel of {order.client_order_id}"):
            return
        try:
            self.cancel(order)
        except ConnectorError as exc:
            self._command_failed("cancel", exc)
            return
        self.count_out()

    def _on_cancel_all(self, message: CancelAll) -> None:
        if self._refused_while_down(f"mass cancel {message.request_id!r}"):
            return
        try:
            self.cancel_all(message.request_id)
        except ConnectorError as exc:
            self._command_failed("cancel_all", exc)

    def _on_request_positions(self, message: RequestPositions) -> None:
        if self._refused_while_down(f"positions request {message.request_id!r}"):
            return
        try:
            self.request_positions(message.request_id)
        except ConnectorError as exc:
            self._command_failed("request_positions", exc)

    def _refused_while_down(self, what: str) -> bool:
        if self._connected:
            return False
        self.count_error()
        self.log.warning(f"connector {self.name}: {what} not sent: not connected to the venue")
        return True

    def _command_failed(self, what: str, exc: ConnectorError) -> None:
        """The session refused a command: it is gone (reconnect), not the actor."""
        self.count_error()
        self.log.warning(f"connector {self.name}: {what} failed: {exc}")
        if self.phase == "up":
            self._lose_session(f"{what} failed: {exc}")

    # ---- orders in flight (actor thread) ----------------------------------------------

    def _track_sent(self, order: SubmitOrder) -> None:
        coid = order.client_order_id
        if coid in self._inflight:
            return
        self._inflight.sent(coid, time.monotonic())
        self._inflight_orders[coid] = order
        self._arm_inflight()

    def journal_orders(self) -> list[OrderRecord] | None:
        """The journal's orders of this venue that are not terminal (the connector's
        ``journal`` setting, else ``JOURNAL_NAME``, in the state directory), read only: the
        keeper and the governor write it. None when there is no journal yet or it cannot be
        read (counted as an error and logged)."""
        path = self.state_dir / str(getattr(self.config, "journal", JOURNAL_NAME))
        if not path.is_file():
            return None
        try:
            with Journal(path, writer=READER) as journal:
                return [r for r in journal.open_orders() if r.order.venue == self.name]
        except JournalError as exc:
            self.count_error()
            self.log.error(f"connector {self.name}: cannot read the journal's open orders: {exc}")
            return None

    def deliver_checking_delay(self, late: LateAcks, message: Any) -> None:
        """Publish an order event; the first acknowledgement (accepted or filled) of an order
        later than ``late``'s bound after its sending raises a WARNING naming both."""
        event = late_event(late, message, self.name)
        if event is not None:
            self.log.bind(client_order_id=message.client_order_id, delay_s=str(event.value)).warning(
                f"connector {self.name}: {event.detail}")
            self.deliver(event)
        self.deliver(message)

    def _track_journal_pending(self) -> None:
        """Orders of this venue the journal holds as sent and never answered (a previous
        life of the connector or of the process sent them): in flight from now on, so the
        resynchronisation or the status queries end each of them. Read only, once per
        actor; a journal that cannot be read is logged and skipped."""
        records = self.journal_orders()
        if records is None:
            return
        pending = [r.order for r in records if r.status is OrderStatus.PENDING]
        for order in pending:
            self._track_sent(order)
        if pending:
            self.log.warning(f"connector {self.name}: {len(pending)} order(s) from the journal never "
                             f"answered by the venue, in flight again: "
                             f"{', '.join(o.client_order_id for o in pending[:20])}")

    def _settle_inflight(self, client_order_id: str) -> None:
        """The venue said something about ``client_order_id``: no longer in flight."""
        answered = self._inflight.answered(client_order_id, time.monotonic())
        self._inflight_orders.pop(client_order_id, None)
        if answered is not None and answered.queries:
            self.log.info(f"connector {self.name}: order {client_order_id} answered after "
                          f"{answered.queries} status quer{'y' if answered.queries == 1 else 'ies'} "
                          f"({answered.waited_s:.1f}s after it was sent)")

    def _arm_inflight(self) -> None:
        """Have ``_InflightDue`` told when the next query or give-up is due."""
        due = self._inflight.next_due()
        if due is None:
            if self._inflight_timer is not None:
                self._inflight_timer.cancel()
                self._inflight_timer = None
            self._inflight_at = math.inf
            return
        if self._inflight_timer is not None and self._inflight_at <= due:
            return  # the armed timer comes first; it re-arms
        if self._inflight_timer is not None:
            self._inflight_timer.cancel()
        self._inflight_token += 1
        self._inflight_at = due
        self._inflight_timer = scheduler.call_later(
            max(due - time.monotonic(), 0.0), _teller(self.actor_ref, _InflightDue(self._inflight_token)))

    def _on_inflight_due(self, message: _InflightDue) -> None:
        if message.token != self._inflight_token or self.phase == "stopped":
            return
        self._inflight_timer = None
        self._inflight_at = math.inf
        for action in self._inflight.due(time.monotonic()):
            if isinstance(action, GiveUp):
                self._give_up(action)
            elif self.phase == "up":  # a query may have lost the session: no more are sent
                self._query(action)
        self._arm_inflight()

    def _query(self, action: QueryStatus) -> None:
        order = self._inflight_orders.get(action.client_order_id)
        if order is None:
            return
        self.log.bind(client_order_id=order.client_order_id, attempt=action.attempt).warning(
            f"connector {self.name}: no answer for order {order.client_order_id}; status query "
            f"{action.attempt} of {self.config.inflight_retries}")
        try:
            self.query_order_status(order)
        except ConnectorError as exc:
            self._command_failed("status query", exc)
            return
        self.count_out()

    def _give_up(self, action: GiveUp) -> None:
        """The policy: cancel at the venue, end the order, alert, reconcile at once."""
        coid = action.client_order_id
        order = self._inflight_orders.pop(coid, None)
        if order is None:
            return
        symbol = order.symbol
        detail = (f"order {coid} ({order.side} {order.quantity} {symbol}) {action.text}: "
                  f"cancelled at the venue, ended as cancelled; positions re-read")
        self.log.bind(client_order_id=coid, queries=action.queries).warning(
            f"connector {self.name}: {detail}")
        try:
            self.cancel(CancelOrder(client_order_id=coid, venue=self.name, source="inflight"))
            self.count_out()
        except ConnectorError as exc:
            self.count_error()
            self.log.warning(f"connector {self.name}: cancel of lost order {coid} not sent: {exc}")
        try:
            self.order_given_up(coid)
        except Exception:  # forgetting must not stop the order's end
            self.count_error()
            self.log.exception(f"connector {self.name}: forgetting lost order {coid} failed")
        ts = now_ns()
        self.deliver(OrderCancelled(client_order_id=coid, venue=self.name, symbol=symbol,
                                    text=action.text, ts_ns=ts))
        self.deliver(SafetyEvent(kind="order_lost_in_flight", severity=Severity.WARNING, venue=self.name,
                                 symbol=symbol, detail=detail, value=Decimal(action.queries), ts_ns=ts))
        try:
            self.request_positions(f"inflight-{coid}")
        except ConnectorError as exc:
            self.count_error()
            self.log.warning(f"connector {self.name}: positions after lost order {coid} not asked: {exc}")

    # ---- what the venue says --------------------------------------------------------

    def deliver(self, message: Any) -> None:
        """Publish a venue message on its topic (actor thread only); drops fills already
        published in this session. An order event ends the order's time in flight."""
        if isinstance(message, QuoteBatch):
            bus.publish(topics.MARKET, message)
            return
        coid = getattr(message, "client_order_id", None)
        if coid and coid in self._inflight:
            self._settle_inflight(coid)
        if isinstance(message, OrderFilled):
            if message.fill_id in self._seen_fills:
                self.count_drop()
                return
            self._seen_fills.add(message.fill_id)
            with self._lock:
                self._counts["fills"] += 1
            bus.publish(topics.ORDERS, message)
        elif isinstance(message, (OrderAccepted, OrderRejected, OrderCancelled, CancelAllDone)):
            bus.publish(topics.ORDERS, message)
        elif isinstance(message, VenuePositions):
            bus.publish(topics.POSITIONS, message)
        elif isinstance(message, SafetyEvent):
            bus.publish(topics.SAFETY, message)
        else:
            self.count_malformed(f"cannot deliver {type(message).__name__}")

    def inbound(self, message: Any) -> None:
        """Hand a decoded venue message to the actor through the current link; any thread.
        An I/O thread should keep the link ``connect`` gave it and call ``link.tell``."""
        self.link.tell(message)

    def session_up(self) -> None:
        """The session of the current attempt is open; any thread."""
        self.link.up()

    def session_lost(self, reason: str) -> None:
        """The session of the current attempt is gone (or could not be opened); any thread.
        The actor closes it and reconnects with backoff."""
        self.link.lost(reason)

    def _note_inbound(self) -> None:
        self._last_message_ns = now_ns()
        self.count_in()

    # ---- counters -------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def count_in(self, n: int = 1) -> None:
        """Inbound messages read."""
        self._count("in", n)

    def count_out(self, n: int = 1) -> None:
        """Outbound messages sent."""
        self._count("out", n)

    def count_drop(self, n: int = 1) -> None:
        """Inbound messages dropped (duplicates, outside the reorder window)."""
        self._count("drops", n)

    def count_error(self, n: int = 1) -> None:
        """Errors reported by the venue or met on the session."""
        self._count("errors", n)

    def count_malformed(self, detail: str) -> None:
        """An inbound message that could not be decoded: counted and logged, never raised."""
        self._count("malformed")
        self.log.bind(detail=detail[:500]).warning(f"connector {self.name}: malformed message")

    def report_gap(self, symbol: str, expected: int, got: int) -> None:
        """A sequence gap in market data: counted and raised as a WARNING safety event."""
        self.report_sequence_problem("sequence_gap", symbol, f"expected seq {expected}, got {got}")

    def report_sequence_problem(self, kind: str, symbol: str, detail: str) -> None:
        """A market data sequence problem (``kind``: ``sequence_gap``, ``sequence_reset``):
        counted as a gap, logged, and raised as a WARNING safety event. Any thread."""
        self._count("gaps")
        self.log.bind(symbol=symbol, detail=detail).warning(f"connector {self.name}: {kind} on {symbol}")
        event = SafetyEvent(kind=kind, severity=Severity.WARNING, venue=self.name, symbol=symbol,
                            detail=detail, ts_ns=now_ns())
        try:
            self.actor_ref.tell(event)
        except pykka.ActorDeadError:
            pass

    def note_latency(self, ms: float) -> None:
        """Record the last measured round trip to the venue."""
        self._latency_ms = ms

    def health(self) -> HealthReport:
        """The connector's view of its session."""
        with self._lock:
            counts = dict(self._counts)
        return HealthReport(
            name=self.name, connected=self._connected, latency_ms=self._latency_ms,
            messages_in=counts["in"], messages_out=counts["out"], drops=counts["drops"],
            errors=counts["errors"], malformed=counts["malformed"], gaps=counts["gaps"],
            fills=counts["fills"], last_message_ns=self._last_message_ns, ts_ns=now_ns(),
        )

    def _schedule_health(self) -> None:
        self._health_timer = scheduler.call_later(self.config.health_interval_s,
                                                  _teller(self.actor_ref, _HealthTick()))

    def _on_health_tick(self, _tick: _HealthTick) -> None:
        bus.publish(topics.HEALTH, self.health())
        if self.phase != "stopped":
            self._schedule_health()

    @staticmethod
    def elapsed_ms(start: float) -> float:
        """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
        return (time.perf_counter() - start) * 1000.0


def _teller(ref: pykka.ActorRef[Any], message: Any) -> Callable[[], None]:
    """A timer callback that tells ``ref`` ``message`` (nothing once the actor is gone)."""

    def tell() -> None:
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            pass

    return tell
