"""The connector contract.

A connector owns one venue session. Its I/O runs in a thread it owns (quickfix's own
threads, a ZeroMQ poller, an asyncio loop for ib_insync); that thread hands inbound
events to the actor with ``inbound`` and the actor's mailbox serialises all state. Losing
the session is a crash: ``session_lost`` makes the actor fail, the supervisor restarts it
with backoff, and ``setup`` reconnects, resynchronises and resubscribes.

Every connector implements ``connect``, ``disconnect``, ``resync``, ``subscribe``,
``submit``, ``cancel``, ``cancel_all`` and ``request_positions``. The base routes told
commands to them, publishes what the venue says on the bus, drops duplicate fills, keeps
the health counters and publishes a ``HealthReport`` every ``health_interval_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar

import msgspec
from loguru import logger
from msgspec import Meta

from actors import topics
from actors.errors import ConnectorError
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
    QuoteBatch,
    RequestPositions,
    SafetyEvent,
    Severity,
    SubmitOrder,
    VenuePositions,
    now_ns,
)
from messages.bounds import Interval, Name, Symbol
from supervision import SupervisedActor, TimerHandle, bus, scheduler


class ConnectorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings every connector has; each connector extends it with its own fields."""

    name: Name
    """Instance name: the ``venue`` of every message it emits and its registry name."""
    kind: str
    """Which connector: ``paper``, ``zmq``, ``fix``, ``ibkr`` or a plug-in's kind."""
    symbols: tuple[Symbol, ...] = ()
    """Symbols subscribed on every (re)connect."""
    connect_timeout_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 5.0
    """How long ``connect`` may take before the start counts as failed."""
    health_interval_s: Interval = 1.0
    """How often a ``HealthReport`` is published."""


class _SessionLost(msgspec.Struct, frozen=True):
    reason: str


class _HealthTick(msgspec.Struct, frozen=True):
    pass


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

    @property
    def name(self) -> str:
        """The connector's name (also the venue name in its messages)."""
        return self.config.name

    # ---- the contract: implemented by each connector (actor thread) -----------------

    def connect(self) -> None:
        """Open the session within ``connect_timeout_s``; raise ``ConnectorError`` on failure."""
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

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        self.connect()
        self._connected = True
        self.resync()
        if self.config.symbols:
            self.subscribe(self.config.symbols)
        bus.publish(
            topics.CONNECTORS,
            ConnectorUp(name=self.name, generation=self.context.generation, ts_ns=now_ns()),
        )
        self.log.info(f"connector {self.name} up (generation {self.context.generation})")
        self._schedule_health()

    def teardown(self) -> None:
        was_connected, self._connected = self._connected, False
        if self._health_timer is not None:
            self._health_timer.cancel()
        try:
            self.disconnect()
        finally:
            if was_connected:
                bus.publish(topics.CONNECTORS, ConnectorDown(name=self.name, ts_ns=now_ns()))
                bus.publish(topics.HEALTH, self.health())

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            SubmitOrder: self._on_submit,
            CancelOrder: self._on_cancel,
            CancelAll: lambda m: self.cancel_all(m.request_id),
            RequestPositions: lambda m: self.request_positions(m.request_id),
            QuoteBatch: self.deliver,
            OrderAccepted: self.deliver,
            OrderRejected: self.deliver,
            OrderFilled: self.deliver,
            OrderCancelled: self.deliver,
            CancelAllDone: self.deliver,
            VenuePositions: self.deliver,
            SafetyEvent: self.deliver,
            _SessionLost: self._on_session_lost,
            _HealthTick: self._on_health_tick,
        }

    def _on_submit(self, order: SubmitOrder) -> None:
        self.submit(order)
        self.count_out()

    def _on_cancel(self, order: CancelOrder) -> None:
        self.cancel(order)
        self.count_out()

    def _on_session_lost(self, lost: _SessionLost) -> None:
        raise ConnectorError(f"session lost: {lost.reason}", venue=self.name)

    # ---- what the venue says --------------------------------------------------------

    def deliver(self, message: Any) -> None:
        """Publish a venue message on its topic (actor thread only); drops duplicate fills."""
        if isinstance(message, QuoteBatch):
            bus.publish(topics.MARKET, message)
        elif isinstance(message, OrderFilled):
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
        """Hand a decoded venue message to the actor; safe from any thread."""
        self._last_message_ns = now_ns()
        self.count_in()
        self.actor_ref.tell(message)

    def session_lost(self, reason: str) -> None:
        """The venue session died: make the actor fail so it is restarted. Any thread."""
        self.log.warning(f"connector {self.name} lost its session: {reason}")
        try:
            self.actor_ref.tell(_SessionLost(reason))
        except Exception:  # the actor is already gone
            pass

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
        self._count("gaps")
        event = SafetyEvent(
            kind="sequence_gap", severity=Severity.WARNING, venue=self.name, symbol=symbol,
            detail=f"expected seq {expected}, got {got}", ts_ns=now_ns(),
        )
        try:
            self.actor_ref.tell(event)
        except Exception:
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
        ref = self.actor_ref

        def tick() -> None:
            try:
                ref.tell(_HealthTick())
            except Exception:
                pass

        self._health_timer = scheduler.call_later(self.config.health_interval_s, tick)

    def _on_health_tick(self, _tick: _HealthTick) -> None:
        bus.publish(topics.HEALTH, self.health())
        if self._connected:
            self._schedule_health()

    @staticmethod
    def elapsed_ms(start: float) -> float:
        """Milliseconds since ``start`` (a ``time.perf_counter()`` reading)."""
        return (time.perf_counter() - start) * 1000.0
