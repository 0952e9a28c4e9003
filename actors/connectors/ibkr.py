"""The Interactive Brokers connector: TWS or IB Gateway through ib_insync.

This is the only module that imports ib_insync; IB's camelCase names stay here.

Threading
---------
ib_insync is asyncio code. The connector owns one thread that runs its own event loop;
the ``IB`` client is created in that thread, a fresh one on every connect (``disconnect``
does not clear ib_insync's cached orders and positions), and only that thread ever calls
into ib_insync. The actor thread hands work to the loop with ``call_soon_threadsafe``:
commands (orders, cancels, requests, subscriptions) go into one queue that a worker task
runs in order, so a cancel never overtakes its order. Only ``disconnect`` waits for the
loop, within a bounded time; ``connect`` starts the thread and the opening of the session
and returns, and the loop thread says through the connection attempt's ``SessionLink``
when the session is up or could not be opened. ib_insync's events are turned into
tradeguard messages in the loop thread and handed to the actor through the same link;
every event handler is wrapped so that one bad message cannot stop the reader.

Session
-------
``connect`` opens the API session within ``connect_timeout_s`` and picks the account
(``account``, or the first managed account when empty). Error 326 (client id already in
use) fails the attempt at once with a ``ConnectorError`` carrying code 326, and the
connector retries with backoff; the usual cause is a previous session of the same
client id that TWS has not dropped yet. If it persists, another program uses that id:
configure a different ``client_id``. The session is lost (the connector closes it and
reconnects with backoff, then resynchronises) when the socket closes.

Staleness: ``reqCurrentTime`` probes the session every ``probe_interval_s`` (and measures
the latency). Once no answer has come for ``probe_interval_s + probe_timeout_s`` the
session is stale: from that moment no new order is written to it; each is refused
(``VENUE_DOWN``, the text says how long the session has been silent), never queued into
a link that may deliver it much later. An answer ends the staleness. After
``stale_after_s`` without an answer the session is declared dead and closed abortively
(``SO_LINGER`` 0, then the transport is aborted) so that bytes still unsent are dropped
by the kernel, not delivered when the network heals; the connector reconnects with
backoff.

With ``order_expiry_s`` resting limit orders (DAY, GTC) are sent GTD with a
``goodTillDate`` that long after their sending, so TWS refuses one that arrives later.
The probe's rules (stale, dead) and the late check are ``core.staleness``.

Connectivity codes halt the venue: 1100 (TWS lost IB) and 2110 (TWS lost its server) are
logged as WARNING, ``ConnectorDown`` is published and orders are refused (``VENUE_DOWN``)
while the session stays open; 1101 or 1102 (restored) end the halt with ``ConnectorUp``.
1101 (market data lost) also renews every market data subscription.

Late executions: the time every order is written is kept (for the life of the actor,
bounded). On its first fill, the delay between that time and the venue's acknowledgement
(the first status, or execution, this session received for it; for an order first heard
of in a later session, the execution's venue time) above ``late_ack_warn_s`` raises a
WARNING ``SafetyEvent`` of kind ``late_execution`` naming the order and the delay.

Mapping
-------
* Symbols are stocks: ``Stock(symbol, exchange, currency)``, qualified once per symbol
  (cached for the life of the actor).
* Orders: MARKET, LIMIT, STOP, STOP_LIMIT become MKT, LMT, STP, STP LMT; DAY, GTC, IOC,
  FOK are passed as is; ``orderRef`` is tradeguard's ``client_order_id``, so the venue
  names the order the same way after a restart. ``reduce_only`` has no IB equivalent and
  is not sent (the risk governor enforces it). Orders placed elsewhere, without an
  ``orderRef``, are named ``ib-<clientId>-<orderId>``.
* Order status PreSubmitted or Submitted -> ``OrderAccepted`` (once per order);
  Cancelled -> ``OrderCancelled``; an IB error that ends an order (ib_insync marks it
  cancelled with the error's code) -> ``OrderRejected`` with reason VENUE and the IB code
  and text. A refused cancel (161, 10147, 10148) is counted and logged: the order keeps
  whatever state the venue reports.
* Order status has no "expired" in IB's API: an order IB ends because its time in force
  ran out (DAY at the close, GTD at its date and time) is reported Cancelled, and is
  journaled cancelled.
* Corrections: IB reports a corrected execution as a new execId equal to the original up
  to the final period, with a later revision after it (``...01.01`` -> ``...01.02``; the
  simulated TWS: ``tws-7`` -> ``tws-7.02``). A later revision becomes ``FillCorrected``
  (``fill_id`` the revision before, ``correction_id`` the new execId, the new shares and
  price) and a WARNING ``trade_correction``, never a second fill; the same revision
  reported again (executions after a reconnect report the latest one only) publishes
  nothing more. IB has no trade bust message.
* Executions -> ``OrderFilled``: ``fill_id`` is IB's execId, leaves is the order's total
  quantity minus the execution's cumulative quantity. Executions read by ``resync``
  whose order no longer works get leaves measured against the order's quantity (its
  completed order's, or as it was sent), else the largest cumulative quantity seen for
  that order (the last one gets zero).
* Positions -> ``VenuePositions``, in answer to ``request_positions`` and after every
  (re)connect; ``avgCost`` is the average price (stocks). The report lists this client's
  working orders (``reqOpenOrders``) for the reconciliation.

Recovery after a reconnect
--------------------------
``resync`` reads this client's open orders, the account's orders completed today
(``reqCompletedOrders``), the account's executions and its positions. Only executions not
delivered before (by execId, remembered for the life of the actor, bounded) are delivered:
a fill is never delivered twice by one actor, and the journal drops a fill it has. Every
order of this client that was working when the session was lost (remembered across
sessions; after a start, the journal's orders of this venue that are not terminal) and no
longer works is ended exactly once: completed Cancelled or ApiCancelled
-> ``OrderCancelled``; completed otherwise (Inactive) -> ``OrderRejected`` (VENUE);
completed Filled, or fully executed -> ended by its fills; partly executed and neither
open nor completed -> ``OrderCancelled``; never executed and neither open nor completed
-> ``OrderRejected`` (VENUE): the venue never received it. A WARNING names each.
* Market data: the ticks of every symbol (bid and ask prices with their sizes, size-only
  ticks, LAST) are applied to the symbol's level-1 book (``core.l1_book``), and quotes
  are published only from the book: each ``pendingTickersEvent`` (one socket read)
  becomes at most one ``QuoteBatch`` of the books that changed and the trades printed.
  A book without both sides sends nothing; a book crossed by one side's tick is held up
  to ``book_settle_s`` for the other side's tick (TWS writes them separately), then
  published as it is. A tick with a non-finite price, or a size that is negative or not
  finite, is counted as malformed and changes nothing; price -1 clears its side.

Back pressure: at most ``max_batches_in_flight`` batches wait in the actor's mailbox.
Beyond that, market data is held in the I/O thread, the newest quote per symbol and a
bounded number of trades, and goes out as one batch when the actor catches up; every
quote or trade pushed out that way is counted as a drop. Memory stays bounded however
fast the venue ticks, and the newest quote of every symbol still reaches the actor.

``cancel_all`` sends ``reqGlobalCancel`` (every order of the account, whichever client
placed it), waits up to ``request_timeout_s`` for this client's working orders to end,
then asks the venue for all open orders and delivers ``CancelAllDone`` with its answer
(a warning is logged when orders are still working).

Import this module from the main thread (the plug-in loader does): eventkit, under
ib_insync, asks for the importing thread's event loop when it is first imported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import socket
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import msgspec
from ib_insync import IB, Contract, ExecutionFilter, Fill, Order, Stock, Ticker
from ib_insync import OrderStatus as IbOrderStatus
from ib_insync import Trade as IbTrade
from msgspec import Meta

from actors import topics
from actors.connectors._io import IoThread, SessionLink
from actors.connectors.base import Connector, ConnectorConfig
from actors.errors import ConnectorError
from core.l1_book import L1Books
from core.staleness import LATE_EXECUTION, LateAcks, SessionProbe, expire_time_ns, late_detail, takes_gtd
from messages import (
    CancelAllDone,
    CancelOrder,
    ConnectorDown,
    ConnectorUp,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    QuoteBatch,
    RejectReason,
    SafetyEvent,
    Severity,
    Side,
    SubmitOrder,
    TimeInForce,
    Trade,
    VenuePosition,
    VenuePositions,
    now_ns,
)
from messages.bounds import FileName, Host, Label, Port
from messages.orders import FillCorrected
from supervision import bus

__all__ = ["IbkrConfig", "IbkrConnector"]

CLIENT_ID_IN_USE = 326
"""IB error: the client id is already connected."""
CONNECTIVITY_LOST = 1100
"""IB error: TWS lost its connection to IB's servers."""
RESTORED_DATA_LOST = 1101
"""IB notice: connectivity restored, market data subscriptions lost."""
RESTORED = 1102
"""IB notice: connectivity restored, nothing lost."""
SERVER_CONNECTIVITY_BROKEN = 2110
"""IB notice: connectivity between TWS and its server is broken (restored automatically)."""
HALTING_CODES = frozenset({CONNECTIVITY_LOST, SERVER_CONNECTIVITY_BROKEN})
"""IB codes that halt the venue until a RESTORED code arrives."""
RESTORING_CODES = frozenset({RESTORED, RESTORED_DATA_LOST})
"""IB codes that end a halt."""
ORDER_CANCELLED = 202
"""IB notice that follows the status of a cancelled order."""
CANCEL_REFUSED = frozenset({161, 10147, 10148})
"""IB errors refusing a cancel: not cancellable, unknown order id, cannot be cancelled."""

_ORDER_TYPES = {
    OrderType.MARKET: "MKT",
    OrderType.LIMIT: "LMT",
    OrderType.STOP: "STP",
    OrderType.STOP_LIMIT: "STP LMT",
}
_TIME_IN_FORCE = {
    TimeInForce.DAY: "DAY",
    TimeInForce.GTC: "GTC",
    TimeInForce.IOC: "IOC",
    TimeInForce.FOK: "FOK",
}
_EXECUTION_SIDES = {"BOT": Side.BUY, "SLD": Side.SELL}
_WORKING = frozenset({"PreSubmitted", "Submitted"})
_LIVE = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})

# IB tick types: price ticks carry a size, size ticks only a size; delayed variants too.
_BID_PRICE_TICKS = frozenset({1, 66})
_ASK_PRICE_TICKS = frozenset({2, 67})
_BID_SIZE_TICKS = frozenset({0, 69})
_ASK_SIZE_TICKS = frozenset({3, 70})
_LAST_TICKS = frozenset({4, 68})
_NO_PRICE = -1.0
"""The price IB sends for a side that has no quote."""

_CLOSE_TIMEOUT_S = 2.0
"""How long ``disconnect`` waits for the session to close and for the thread to end."""
_MAX_HELD_TRADES = 1000
"""Trades held while the actor catches up; older ones beyond this are dropped."""
_MAX_SENT_TIMES = 10_000
"""Orders whose sending time is kept for the late execution check; the oldest go first."""
_MAX_PUBLISHED = 100_000
"""Execution ids remembered as delivered; the oldest go first (the journal still drops a
fill delivered again)."""
_LOCAL_STATES = frozenset({"PendingSubmit", "ApiPending"})
"""Order states ib_insync sets itself before the venue has said anything."""

T = TypeVar("T")


def ib_good_till(expires_ns: int) -> str:
    """The ``goodTillDate`` of an order expiring at ``expires_ns``: ``YYYYMMDD HH:MM:SS UTC``,
    rounded up to the whole second (never earlier than asked)."""
    seconds = -(-expires_ns // 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d %H:%M:%S UTC")


class IbkrConfig(ConnectorConfig, frozen=True, kw_only=True):
    """Settings of one TWS / IB Gateway session."""

    kind: str = "ibkr"
    """Always ``ibkr``."""
    host: Host = "127.0.0.1"
    """Host of TWS or IB Gateway."""
    port: Port = 7497
    """API port (TWS paper trading listens on 7497 by default)."""
    client_id: Annotated[int, Meta(ge=0, le=2_147_483_647)] = 17
    """API client id; unique among the programs connected to the same TWS."""
    account: Label = ""
    """Account to trade; empty means the first managed account."""
    exchange: Annotated[Label, Meta(min_length=1)] = "SMART"
    """Exchange of the stock contracts."""
    currency: Annotated[Label, Meta(min_length=1)] = "USD"
    """Currency of the stock contracts."""
    request_timeout_s: Annotated[float, Meta(ge=0.001, le=3600.0)] = 5.0
    """Longest wait for the answer to a request (contracts, positions, open orders)."""
    max_batches_in_flight: Annotated[int, Meta(ge=1, le=100_000)] = 8
    """Market data batches allowed in the actor's mailbox before quotes are conflated."""
    book_settle_s: float = 0.1
    """How long a book crossed by one side's tick waits for the other side's tick before it
    is published crossed (TWS sends bid and ask separately). 0 to 5."""
    probe_interval_s: Annotated[float, Meta(ge=0.05, le=60.0)] = 1.0
    """How often ``reqCurrentTime`` probes the session. 0.05 to 60."""
    probe_timeout_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 0.5
    """How long a probe may go unanswered, beyond ``probe_interval_s`` since the last
    answer, before the session is stale and takes no new order. Above 0; at or above
    ``stale_after_s`` a silent session goes straight to dead."""
    stale_after_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 5.0
    """Silence (no probe answered) after which the session is declared dead, closed
    abortively and reconnected."""
    late_ack_warn_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 2.0
    """An order acknowledged by the venue more than this long after it was sent raises a
    ``late_execution`` WARNING when it fills. Above 0."""
    order_expiry_s: Annotated[float, Meta(ge=0.0, le=86400.0)] = 0.0
    """Limit and stop-limit orders that would rest (DAY, GTC) are sent GTD with a
    ``goodTillDate`` this many seconds after their sending (rounded up to the second), so
    TWS refuses one that arrives later and cancels it then. 0 (the default) sends none."""
    journal: FileName = "journal.sqlite3"
    """File name, in the state directory, of the journal whose orders for this venue that
    are not terminal are looked for at the first resync after a start (the keeper's
    ``journal_name``); read only, and only when the file exists."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.host:
            raise ValueError("host: must not be empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: must be within 1..65535, got {self.port}")
        if self.client_id < 0:
            raise ValueError(f"client_id: must not be negative, got {self.client_id}")
        if not self.exchange or not self.currency:
            raise ValueError("exchange, currency: must not be empty")
        if not self.journal or "/" in self.journal or self.journal in (".", ".."):
            raise ValueError(f"journal: must be a plain file name, got {self.journal!r}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s: must be positive, got {self.request_timeout_s}")
        if not 0 <= self.book_settle_s <= 5:
            raise ValueError(f"book_settle_s: must be within 0..5, got {self.book_settle_s}")
        if self.max_batches_in_flight < 1:
            raise ValueError(f"max_batches_in_flight: must be at least 1, got {self.max_batches_in_flight}")
        if not (math.isfinite(self.probe_interval_s) and 0.05 <= self.probe_interval_s <= 60):
            raise ValueError(f"probe_interval_s: must be within 0.05..60, got {self.probe_interval_s}")
        if not (math.isfinite(self.order_expiry_s) and 0 <= self.order_expiry_s <= 86400):
            raise ValueError(f"order_expiry_s: must be within 0..86400, got {self.order_expiry_s}")
        for field in ("probe_timeout_s", "stale_after_s", "late_ack_warn_s"):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 < value <= 3600):
                raise ValueError(f"{field}: must be above 0 and at most 3600, got {value}")


class _QuoteGate:
    """The bounded hand-off of market data from the I/O thread to the actor.

    ``offer`` holds new quotes (the newest per symbol) and trades; ``take`` hands them out
    as one batch while fewer than ``limit`` batches are in flight; ``release`` (actor
    thread) marks one batch handled and says whether data is waiting for room.
    """

    def __init__(self, limit: int, max_trades: int = _MAX_HELD_TRADES) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._max_trades = max_trades
        self._in_flight = 0
        self._waiting = False
        self._quotes: dict[str, Quote] = {}
        self._trades: deque[Trade] = deque()

    def offer(self, quotes: Iterable[Quote], trades: Iterable[Trade]) -> int:
        """Hold market data until it can go out; returns how many held items it replaced
        or pushed out."""
        dropped = 0
        with self._lock:
            for quote in quotes:
                if self._quotes.pop(quote.symbol, None) is not None:
                    dropped += 1
                self._quotes[quote.symbol] = quote
            self._trades.extend(trades)
            while len(self._trades) > self._max_trades:
                self._trades.popleft()
                dropped += 1
        return dropped

    def take(self) -> tuple[tuple[Quote, ...], tuple[Trade, ...]] | None:
        """Everything held, as one batch, if the actor has room; else None."""
        with self._lock:
            if not self._quotes and not self._trades:
                return None
            if self._in_flight >= self._limit:
                self._waiting = True
                return None
            self._in_flight += 1
            batch = (tuple(self._quotes.values()), tuple(self._trades))
            self._quotes.clear()
            self._trades.clear()
            return batch

    def release(self) -> bool:
        """One batch was handled; True when held data waits for the room it frees."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            waiting, self._waiting = self._waiting, False
            return waiting


class _VenueHalted(msgspec.Struct, frozen=True):
    """A connectivity code halted the venue (loop thread -> actor)."""

    attempt: int
    reason: str


class _VenueResumed(msgspec.Struct, frozen=True):
    """A connectivity code ended the halt (loop thread -> actor)."""

    attempt: int
    reason: str


@dataclass
class _Order:
    """One order as this session knows it (loop thread only)."""

    client_order_id: str
    symbol: str
    trade: IbTrade
    accepted: bool = False
    done: bool = False
    sent_here: bool = False
    """True when this session wrote the order."""
    acked_ns: int = 0
    """When this session first heard from the venue of an order it wrote (0: not yet)."""


@dataclass(frozen=True)
class _Carried:
    """An order of this client that had not ended when its session closed: the next
    session's resync finds out what became of it (actor lifetime)."""

    client_order_id: str
    symbol: str
    total: Decimal
    """Its quantity."""
    perm_id: int
    """IB's permanent id, 0 when the venue had not answered yet."""
    filled: Decimal = Decimal(0)
    """What the journal holds as filled (orders read from the journal after a start)."""


def _guarded(handler: Callable[..., None]) -> Callable[..., None]:
    """Wrap an ib_insync event handler: an exception is counted and logged, never raised
    into ib_insync's reader."""

    @functools.wraps(handler)
    def guarded(self: IbkrConnector, *args: Any) -> None:
        try:
            handler(self, *args)
        except Exception:
            self.count_error()
            self.log.exception(f"connector {self.name}: {handler.__name__} failed")

    return guarded


def _decimal(value: float) -> Decimal:
    """A float from ib_insync as the Decimal it was written as on the wire."""
    return Decimal(repr(float(value)))


def _is_price(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _order_name(order_ref: str, client_id: int, order_id: int) -> str:
    """tradeguard's name for an IB order: its orderRef, else made from its IB ids."""
    return order_ref or f"ib-{client_id}-{order_id}"


def _exec_revision(exec_id: str) -> tuple[str, int]:
    """An IB execId as (the execution's id without its revision, the revision). IB reports a
    correction of an execution as a new execId that differs only after the final period
    (``....01.01`` -> ``....01.02``); the simulated TWS names the first revision without a
    suffix (``tws-7`` -> ``tws-7.02``). An id without a two-digit suffix is revision 1."""
    head, dot, tail = exec_id.rpartition(".")
    if dot and head and len(tail) == 2 and tail.isdigit():
        return head, int(tail)
    return exec_id, 1


def _previous_exec_id(head: str, revision: int) -> str:
    """The execId of the revision before ``revision`` of the execution ``head`` (see
    ``_exec_revision``): ``head.NN``, and for the first one ``head.01`` (IB) or ``head``
    itself when ``head`` has no period (the simulated TWS)."""
    if revision > 2 or "." in head:
        return f"{head}.{revision - 1:02d}"
    return head


def _ts_ns(moment: object) -> int:
    """Wall clock nanoseconds of an ib_insync datetime; now when there is none."""
    if isinstance(moment, datetime):
        try:
            return int(moment.timestamp() * 1e9)
        except (OverflowError, OSError, ValueError):
            pass
    return now_ns()


class IbkrConnector(Connector):
    """A session with TWS or IB Gateway over IB's API, through ib_insync."""

    kind: ClassVar[str] = "ibkr"
    config_type: ClassVar[type[ConnectorConfig]] = IbkrConfig

    def __init__(self, config: ConnectorConfig, state_dir: Path) -> None:
        if not isinstance(config, IbkrConfig):
            raise TypeError(f"config: expected IbkrConfig, got {type(config).__name__}")
        super().__init__(config, state_dir)
        self.ib_config: IbkrConfig = config
        self.account = ""
        """The account traded, known once connected."""
        self._gate = _QuoteGate(config.max_batches_in_flight)
        self._books = L1Books(config.name, settle_ns=int(config.book_settle_s * 1e9))
        self._book_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: IoThread | None = None
        self._link = SessionLink(None, 0)
        # Loop-thread state.
        self._ib: IB | None = None
        self._closing = False
        self._lost = False
        self._refused: asyncio.Future[str] | None = None
        self._commands: asyncio.Queue[tuple[Callable[..., Awaitable[None]], tuple[Any, ...]]] | None = None
        self._request_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._contracts: dict[str, Contract] = {}
        self._symbols_by_con_id: dict[int, str] = {}
        self._subscribed: dict[str, Contract] = {}
        self._orders: dict[str, _Order] = {}
        self._order_ids: dict[int, str] = {}
        self._exec_revisions: dict[str, str] = {}
        """Execution id without its revision -> the latest execId seen (corrections)."""
        self._unanswered: list[SubmitOrder] = []
        """Orders the session ended under; refused by ``disconnect`` once the thread is joined."""
        self._liveness = SessionProbe(interval_s=config.probe_interval_s,
                                      timeout_s=config.probe_timeout_s,
                                      dead_after_s=config.stale_after_s, now=0.0)
        """What the probe answers say of the session (loop time)."""
        self._halts: dict[int, str] = {}
        """Connectivity codes halting the venue now, with their texts."""
        self._late = LateAcks(config.late_ack_warn_s, _MAX_SENT_TIMES)
        """Wall time each order was written, until its first fill (kept across sessions)."""
        self._carried: dict[str, _Carried] = {}
        """This client's orders that had not ended when a session closed, until a resync
        learns what became of them (kept across sessions; the loop thread owns it while a
        session runs, the actor thread between sessions)."""
        self._journal_read = False
        self._published: OrderedDict[str, None] = OrderedDict()
        """IB execIds already delivered as fills (kept across sessions, bounded): a resync
        delivers only the executions not delivered before."""

    # ---- the contract (actor thread) -------------------------------------------------------

    def connect(self) -> None:
        """Start the I/O thread and the opening of the API session; the loop thread says
        ``up`` (or ``lost``) through the link."""
        link = self._link = self.link
        self._carry_unfinished()
        if not self._journal_read:
            self._journal_read = True
            self._carry_journal_orders()
        # A new session starts from what it reads itself: its resync re-reads the orders,
        # its subscriptions are made again, and no side of a book pairs with a new one.
        self._orders.clear()
        self._order_ids.clear()
        self._subscribed.clear()
        self._gate = _QuoteGate(self.ib_config.max_batches_in_flight)
        self._books = L1Books(self.name, settle_ns=self._books.settle_ns)
        self._book_timer = None
        loop = asyncio.new_event_loop()
        thread = IoThread(f"ibkr-{self.name}", functools.partial(self._run_loop, loop),
                          lambda exc: link.lost(f"I/O thread failed: {type(exc).__name__}: {exc}"))
        self._loop, self._thread = loop, thread
        thread.start()
        opening = asyncio.run_coroutine_threadsafe(self._open(), loop)
        opening.add_done_callback(functools.partial(self._opened, link))

    def _opened(self, link: SessionLink, opening: concurrent.futures.Future[None]) -> None:
        """The opening finished (loop thread): say whether the session is up."""
        cfg = self.ib_config
        if opening.cancelled():
            return  # disconnect() gave up on it
        exc = opening.exception()
        if exc is None:
            self.log.info(
                f"connector {self.name}: IB API session up with {cfg.host}:{cfg.port} "
                f"(client id {cfg.client_id}, account {self.account})"
            )
            link.up()
        elif isinstance(exc, ConnectorError):
            link.lost(str(exc))
        else:
            link.lost(f"cannot connect to {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}")

    def timeout_reason(self) -> str:
        cfg = self.ib_config
        return f"no IB API session with {cfg.host}:{cfg.port} within {cfg.connect_timeout_s}s"

    def disconnect(self) -> None:
        """Cancel subscriptions, close the session, stop the loop and join the thread."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=_CLOSE_TIMEOUT_S)
            except Exception as exc:
                self.log.warning(f"connector {self.name}: IB session did not close cleanly: {exc!r}")
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass  # the loop is already closed
            if not thread.join(_CLOSE_TIMEOUT_S):
                self.log.error(f"connector {self.name}: I/O thread did not stop")
                return  # never touch the loop's state under a live thread
        self._refuse_unanswered()

    def _refuse_unanswered(self) -> None:
        """Refuse (``VENUE_DOWN``) every order the closed session never placed: those still
        queued and those it could no longer answer to the actor (actor thread, loop stopped)."""
        orders, self._unanswered = self._unanswered, []
        while self._commands is not None and not self._commands.empty():
            command, args = self._commands.get_nowait()
            if command == self._place:
                orders.append(args[0])
        for order in orders:
            self.deliver(self._rejected(order.client_order_id, order.symbol, RejectReason.VENUE_DOWN,
                                        "IB session closed before the order was placed"))

    def resync(self) -> None:
        """Re-request this client's open orders, the account's executions and its positions.

        Working orders are delivered as ``OrderAccepted``, executions as ``OrderFilled`` (the
        base drops the ones already seen, the position keeper those of earlier lives) and
        positions as ``VenuePositions`` with an empty request id.
        """
        self._post(self._resync)

    def subscribe(self, symbols: Sequence[str]) -> None:
        """Subscribe to the quotes and trades of ``symbols``."""
        self._post(self._subscribe, tuple(symbols))

    def submit(self, order: SubmitOrder) -> None:
        """Place a new order; refused at once (``VENUE_DOWN``) when the session is gone."""
        if not self._post(self._place, order):
            self.deliver(self._rejected(order.client_order_id, order.symbol, RejectReason.VENUE_DOWN,
                                        "IB session is down"))

    def cancel(self, order: CancelOrder) -> None:
        """Ask IB to cancel one order."""
        if not self._post(self._cancel, order.client_order_id):
            self.count_error()
            self.log.warning(f"connector {self.name}: cancel of {order.client_order_id} not sent: down")

    def cancel_all(self, request_id: str) -> None:
        """``reqGlobalCancel``; ``CancelAllDone`` once the venue shows no working orders."""
        if self._post(self._cancel_all, request_id):
            self.count_out()
        else:
            self.count_error()
            self.log.warning(f"connector {self.name}: mass cancel {request_id!r} not sent: down")

    def request_positions(self, request_id: str) -> None:
        """``reqPositions``; answered with ``VenuePositions`` carrying ``request_id``."""
        if self._post(self._spawn_positions, request_id):
            self.count_out()
        else:
            self.count_error()
            self.log.warning(f"connector {self.name}: positions request {request_id!r} not sent: down")

    def query_order_status(self, order: SubmitOrder) -> None:
        """IB has no status request for one order: this client's open orders, the completed
        orders and the account's executions are read and searched for it."""
        if not self._post(self._spawn_status_query, order):
            self.count_error()
            self.log.warning(f"connector {self.name}: status query of {order.client_order_id} not sent: down")

    # ---- the actor side of market data ---------------------------------------------------

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        table = super().handlers()
        table[QuoteBatch] = self._on_quote_batch
        table[_VenueHalted] = self._on_venue_halted
        table[_VenueResumed] = self._on_venue_resumed
        table[FillCorrected] = lambda message: bus.publish(topics.ORDERS, message)
        return table

    def _on_venue_halted(self, message: _VenueHalted) -> None:
        """A connectivity code halted the venue: down (orders refused) with the session open."""
        if message.attempt != self.link.attempt or self.phase != "up" or not self._connected:
            return
        self._connected = False
        self.log.warning(f"connector {self.name}: venue halted: {message.reason}")
        bus.publish(topics.CONNECTORS, ConnectorDown(name=self.name, reason=message.reason, ts_ns=now_ns()))
        bus.publish(topics.HEALTH, self.health())

    def _on_venue_resumed(self, message: _VenueResumed) -> None:
        """The halt ended: up again on the same session."""
        if message.attempt != self.link.attempt or self.phase != "up" or self._connected:
            return
        self._connected = True
        self.log.warning(f"connector {self.name}: venue resumed: {message.reason}")
        bus.publish(topics.CONNECTORS,
                    ConnectorUp(name=self.name, generation=self.context.generation, ts_ns=now_ns()))
        bus.publish(topics.HEALTH, self.health())

    def _on_quote_batch(self, batch: QuoteBatch) -> None:
        self.deliver(batch)
        if self._gate.release():
            self._call_soon(self._flush_quotes)

    # ---- hand-off to the loop ------------------------------------------------------------

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> bool:
        loop = self._loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _post(self, command: Callable[..., Awaitable[None]], *args: Any) -> bool:
        """Queue ``command(*args)`` for the loop's worker; False when the session is gone."""
        return self._call_soon(self._enqueue, command, args)

    def _enqueue(self, command: Callable[..., Awaitable[None]], args: tuple[Any, ...]) -> None:
        if self._commands is not None:
            self._commands.put_nowait((command, args))

    def _tell(self, message: Any) -> None:
        """Hand a message to the actor (loop thread)."""
        self._link.tell(message)

    # ---- the I/O thread --------------------------------------------------------------------

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _open(self) -> None:
        cfg = self.ib_config
        loop = asyncio.get_running_loop()
        self._closing = self._lost = False
        self._halts.clear()
        self._liveness.restart(loop.time())
        self._commands = asyncio.Queue()
        self._request_lock = asyncio.Lock()
        self._refused = loop.create_future()
        ib = self._ib = IB()  # type: ignore[no-untyped-call]
        ib.errorEvent += self._on_error
        connecting = asyncio.ensure_future(
            ib.connectAsync(cfg.host, cfg.port, clientId=cfg.client_id, timeout=cfg.connect_timeout_s)
        )
        await asyncio.wait({connecting, self._refused}, timeout=cfg.connect_timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
        if self._refused.done() or not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            if self._refused.done():
                raise ConnectorError(
                    f"client id {cfg.client_id} is already in use at {cfg.host}:{cfg.port}; if this "
                    "persists, another program holds it: configure a different client_id",
                    venue=self.name, code=CLIENT_ID_IN_USE, venue_text=self._refused.result(),
                )
            raise ConnectorError(
                f"no IB API session with {cfg.host}:{cfg.port} within {cfg.connect_timeout_s}s",
                venue=self.name,
            )
        try:
            connecting.result()
        except (OSError, TimeoutError) as exc:
            raise ConnectorError(
                f"cannot connect to {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}", venue=self.name
            ) from exc
        accounts = ib.managedAccounts()
        if cfg.account and cfg.account not in accounts:
            raise ConnectorError(
                f"account {cfg.account!r} is not managed by this login (managed: {', '.join(accounts)})",
                venue=self.name,
            )
        if not accounts and not cfg.account:
            raise ConnectorError("the login manages no account", venue=self.name)
        self.account = cfg.account or accounts[0]
        ib.pendingTickersEvent += self._on_pending_tickers
        ib.orderStatusEvent += self._on_order_status
        ib.execDetailsEvent += self._on_exec_details
        ib.disconnectedEvent += self._on_disconnected
        self._spawn(self._work(), "command worker")
        self._liveness.restart(loop.time())
        self._spawn(self._probe(), "session probe")

    async def _close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        ib, self._ib = self._ib, None
        if ib is None:
            return
        if ib.isConnected():
            for contract in self._subscribed.values():
                try:
                    ib.cancelMktData(contract)
                except ConnectionError:
                    break
        ib.disconnect()  # type: ignore[no-untyped-call]
        ib.client.disconnect()  # type: ignore[no-untyped-call]  # a socket still in its handshake too
        await asyncio.sleep(0.01)  # let the transport finish closing its socket

    def _spawn(self, work: Awaitable[None], what: str) -> None:
        """Run ``work`` as a task of its own; it is cancelled when the session closes."""
        task: asyncio.Task[None] = asyncio.ensure_future(self._guard(work, what))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, work: Awaitable[None], what: str) -> None:
        """Await ``work``; a failure is counted and logged, never raised into the loop."""
        try:
            await work
        except (ConnectionError, TimeoutError) as exc:
            if self._closing:
                return  # the session is being closed under it
            self.count_error()
            self.log.warning(f"connector {self.name}: {what} failed: {exc!r}")
        except Exception:
            self.count_error()
            self.log.exception(f"connector {self.name}: {what} failed")

    async def _work(self) -> None:
        """Run queued commands one at a time, in the order the actor sent them."""
        assert self._commands is not None
        while True:
            command, args = await self._commands.get()
            if self._closing:
                self._commands.put_nowait((command, args))  # disconnect() answers what is left
                return
            await self._guard(command(*args), command.__name__)

    async def _probe(self) -> None:
        """Probe the session every ``probe_interval_s``: a late answer makes it stale (no new
        order is written), none within ``stale_after_s`` makes it dead (closed abortively)."""
        cfg = self.ib_config
        loop = asyncio.get_running_loop()
        while True:
            started, clock = loop.time(), time.perf_counter()
            try:
                answer = asyncio.ensure_future(self._session().reqCurrentTimeAsync())
            except ConnectionError:
                return  # the disconnect handler reports it
            try:
                await asyncio.wait_for(asyncio.shield(answer), cfg.probe_timeout_s)
            except TimeoutError:
                self._note_stale(loop.time())
                try:
                    remaining = cfg.stale_after_s - self._liveness.silent_s(loop.time())
                    await asyncio.wait_for(answer, max(remaining, 0.0))
                except TimeoutError:
                    self._abort(f"no answer to reqCurrentTime for "
                                f"{self._liveness.silent_s(loop.time()):.1f}s "
                                f"(stale_after_s {cfg.stale_after_s})")
                    return
            self.note_latency(self.elapsed_ms(clock))
            stale_s = self._liveness.answered(loop.time())
            if stale_s is not None:
                self.log.warning(f"connector {self.name}: IB session answers again after "
                                 f"{stale_s:.1f}s stale")
            await asyncio.sleep(max(0.0, cfg.probe_interval_s - (loop.time() - started)))

    def _silent_s(self) -> float:
        """Seconds since the last probe answer (loop thread)."""
        return self._liveness.silent_s(asyncio.get_running_loop().time())

    def _is_stale(self) -> bool:
        """True once a probe is overdue: no answer for ``probe_interval_s + probe_timeout_s``."""
        return not self._liveness.takes_orders(asyncio.get_running_loop().time())

    def _note_stale(self, now: float) -> None:
        if self._liveness.note(now):
            self.log.warning(f"connector {self.name}: IB session stale: no answer to the probe for "
                             f"{self._silent_s():.1f}s; new orders are refused")

    def _abort(self, reason: str) -> None:
        """Declare the session dead and close its socket abortively: ``SO_LINGER`` 0 makes
        the close a reset that drops what the kernel has not sent yet (loop thread)."""
        self.log.warning(f"connector {self.name}: IB session declared dead: {reason}")
        self._lose(reason)
        ib = self._ib
        transport = ib.client.conn.transport if ib is not None else None
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError as exc:
                self.log.warning(f"connector {self.name}: cannot set SO_LINGER 0: {exc!r}")
        transport.abort()

    def _session(self) -> IB:
        ib = self._ib
        if ib is None or not ib.isConnected():
            raise ConnectionError("IB session is not connected")
        return ib

    def _lose(self, reason: str) -> None:
        if self._closing or self._lost:
            return
        self._lost = True
        self._link.lost(reason)

    async def _request(self, awaitable: Awaitable[T]) -> T:
        """Wait for one answer within ``request_timeout_s``, noting the round trip."""
        started = time.perf_counter()
        result = await asyncio.wait_for(awaitable, self.ib_config.request_timeout_s)
        self.note_latency(self.elapsed_ms(started))
        return result

    # ---- commands (loop thread) ------------------------------------------------------------

    async def _resync(self) -> None:
        ib = self._session()
        assert self._request_lock is not None
        async with self._request_lock:
            trades: list[IbTrade] = await self._request(ib.reqOpenOrdersAsync())
        open_totals: dict[str, Decimal] = {}
        for trade in trades:
            order = self._adopt(trade)
            if trade.orderStatus.status in IbOrderStatus.DoneStates:
                continue
            open_totals[order.client_order_id] = _decimal(trade.order.totalQuantity)
            if not order.accepted and trade.orderStatus.status in _WORKING:
                order.accepted = True
                self._tell(self._accepted(order))
        answer = await self._completed_orders()
        completed = answer or {}
        fills: list[Fill] = await self._request(
            ib.reqExecutionsAsync(ExecutionFilter(acctCode=self.account))
        )
        final: dict[str, Decimal] = {}
        for fill in fills:
            coid = _order_name(fill.execution.orderRef, fill.execution.clientId, fill.execution.orderId)
            final[coid] = max(final.get(coid, Decimal(0)), _decimal(fill.execution.cumQty))
        delivered = 0
        for fill in fills:
            if fill.execution.execId in self._published:
                continue  # delivered before: nothing counts twice
            coid = _order_name(fill.execution.orderRef, fill.execution.clientId, fill.execution.orderId)
            total = open_totals.get(coid) or self._known_total(coid, completed, final[coid])
            self._check_late(coid, self._symbol_of(fill.contract), _ts_ns(fill.execution.time))
            message = self._filled(coid, self._symbol_of(fill.contract), fill, total)
            if message is not None:
                self._note_published(message.fill_id)
                self._tell(message)
                delivered += 1
        ended = self._end_carried(open_totals, completed, final) if answer is not None else 0
        self.log.info(
            f"connector {self.name}: resync: {len(trades)} open orders, {len(completed)} completed, "
            f"{len(fills)} executions ({delivered} not delivered before), {ended} orders ended "
            f"while the session was down"
        )
        await self._report_positions("")

    async def _subscribe(self, symbols: tuple[str, ...]) -> None:
        ib = self._session()
        for symbol in symbols:
            if symbol in self._subscribed:
                continue
            contract = await self._contract(symbol)
            if contract is None:
                self.count_error()
                self.log.warning(f"connector {self.name}: no IB contract for {symbol}: not subscribed")
                continue
            ib.reqMktData(contract)
            self._subscribed[symbol] = contract

    def _resubscribe(self) -> None:
        """Renew every market data subscription (after error 1101)."""
        ib = self._session()
        for contract in self._subscribed.values():
            ib.cancelMktData(contract)
            ib.reqMktData(contract)

    async def _contract(self, symbol: str) -> Contract | None:
        """The qualified stock contract of ``symbol`` (asked once, then cached)."""
        contract = self._contracts.get(symbol)
        if contract is not None:
            return contract
        cfg = self.ib_config
        wanted = Stock(symbol, cfg.exchange, cfg.currency)
        qualified = await self._request(self._session().qualifyContractsAsync(wanted))
        if not qualified:
            return None
        self._contracts[symbol] = wanted
        self._symbols_by_con_id[wanted.conId] = symbol
        return wanted

    async def _place(self, order: SubmitOrder) -> None:
        coid = order.client_order_id
        if coid in self._orders:
            self._tell(self._rejected(coid, order.symbol, RejectReason.DUPLICATE_ID,
                                      f"client order id {coid} already used in this session"))
            return
        if self._lost:
            self._unanswered.append(order)  # the actor is failing: disconnect() refuses it
            return
        unfit = self._unfit_reason()
        if unfit is not None:
            self._refuse_down(order, unfit)
            return
        try:
            contract = await self._contract(order.symbol)
        except asyncio.CancelledError:
            self._unanswered.append(order)
            raise
        except (ConnectionError, TimeoutError) as exc:
            self._refuse_down(order, f"contract lookup failed: {exc!r}")
            return
        if contract is None:
            self._tell(self._rejected(coid, order.symbol, RejectReason.UNKNOWN_SYMBOL,
                                      f"IB has no {self.ib_config.exchange} stock {order.symbol} "
                                      f"in {self.ib_config.currency}"))
            return
        ib_order = Order(
            action="BUY" if order.side is Side.BUY else "SELL",
            totalQuantity=float(order.quantity),
            orderType=_ORDER_TYPES[order.order_type],
            tif=_TIME_IN_FORCE[order.time_in_force],
            orderRef=coid,
            account=self.account,
            transmit=True,
        )
        if order.limit_price is not None and order.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            ib_order.lmtPrice = float(order.limit_price)
        if order.stop_price is not None and order.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            ib_order.auxPrice = float(order.stop_price)
        self._set_expiry(ib_order, order)
        unfit = self._unfit_reason()  # checked at the last moment: the lookup may have waited
        if unfit is not None:
            self._refuse_down(order, unfit)
            return
        try:
            trade = self._session().placeOrder(contract, ib_order)
        except ConnectionError as exc:
            self._refuse_down(order, str(exc))
            return
        self._late.sent(coid, now_ns())
        self._orders[coid] = _Order(coid, order.symbol, trade, sent_here=True)
        self._order_ids[trade.order.orderId] = coid

    def _set_expiry(self, ib_order: Order, order: SubmitOrder) -> None:
        """With ``order_expiry_s`` set, a resting limit order is sent GTD, good till that long
        from now (``goodTillDate`` in UTC, whole seconds rounded up): TWS refuses it when it
        arrives later than that, and cancels it then if it still works."""
        expires_ns = expire_time_ns(now_ns(), self.ib_config.order_expiry_s)
        if expires_ns is None or not takes_gtd(order):
            return
        ib_order.tif = "GTD"
        ib_order.goodTillDate = ib_good_till(expires_ns)

    def _unfit_reason(self) -> str | None:
        """Why no order may be written to the session now (halted, stale), or None."""
        if self._halts:
            code, text = next(iter(self._halts.items()))
            return f"venue halted by IB {code}: {text}"
        if self._is_stale():
            self._note_stale(asyncio.get_running_loop().time())
            return f"IB session stale: no answer to the probe for {self._silent_s():.1f}s"
        return None

    def _refuse_down(self, order: SubmitOrder, text: str) -> None:
        """Refuse an order the session cannot place. Once the session is lost, the actor is
        failing and would never read a refusal told now: ``disconnect`` delivers it."""
        if self._lost or self._closing:
            self._unanswered.append(order)
        else:
            self._tell(self._rejected(order.client_order_id, order.symbol, RejectReason.VENUE_DOWN, text))

    async def _cancel(self, client_order_id: str) -> None:
        order = self._orders.get(client_order_id)
        if order is None or order.done:
            self.count_error()
            self.log.warning(f"connector {self.name}: cancel of {client_order_id}: "
                             f"{'already done' if order else 'unknown order'}")
            return
        self._session().cancelOrder(order.trade.order)

    async def _cancel_all(self, request_id: str) -> None:
        self._session().reqGlobalCancel()  # type: ignore[no-untyped-call]
        self._spawn(self._confirm_cancel_all(request_id), f"mass cancel {request_id!r}")

    async def _confirm_cancel_all(self, request_id: str) -> None:
        ib = self._session()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ib_config.request_timeout_s
        while loop.time() < deadline and any(
            not order.done and order.trade.orderStatus.status in _LIVE for order in self._orders.values()
        ):
            await asyncio.sleep(0.02)
        assert self._request_lock is not None
        async with self._request_lock:
            trades: list[IbTrade] = await self._request(ib.reqAllOpenOrdersAsync())
        working = [t for t in trades if t.orderStatus.status not in IbOrderStatus.DoneStates]
        if working:
            self.count_error()
            self.log.warning(f"connector {self.name}: {len(working)} orders still working after "
                             f"the mass cancel {request_id!r}")
        self._tell(CancelAllDone(venue=self.name, request_id=request_id, ts_ns=now_ns()))

    async def _spawn_status_query(self, order: SubmitOrder) -> None:
        self._spawn(self._status_query(order), f"status query of {order.client_order_id}")

    async def _status_query(self, order: SubmitOrder) -> None:
        """Where the order is at IB: working (open orders: accepted), done (completed orders:
        cancelled, or its executions), executed (its fills), or nowhere: it never reached
        the venue (rejected, with a WARNING)."""
        ib = self._session()
        coid = order.client_order_id
        assert self._request_lock is not None
        async with self._request_lock:
            opened: list[IbTrade] = await self._request(ib.reqOpenOrdersAsync())
            completed: list[IbTrade] = await self._request(ib.reqCompletedOrdersAsync(apiOnly=True))
            fills: list[Fill] = await self._request(
                ib.reqExecutionsAsync(ExecutionFilter(acctCode=self.account)))

        def named(ref: str, client_id: int, order_id: int) -> bool:
            return _order_name(ref, client_id, order_id) == coid

        working = [t for t in opened if named(t.order.orderRef, t.order.clientId, t.order.orderId)
                   and t.orderStatus.status not in IbOrderStatus.DoneStates]
        done = [t for t in completed if named(t.order.orderRef, t.order.clientId, t.order.orderId)]
        executed = [f for f in fills
                    if named(f.execution.orderRef, f.execution.clientId, f.execution.orderId)]
        self.log.bind(client_order_id=coid, working=len(working), completed=len(done),
                      executions=len(executed)).info(f"connector {self.name}: order status read")
        if not (working or done or executed):
            known = self._orders.get(coid)
            if known is not None:
                known.done = True  # a late word of it is still published (fills always are)
            for event in self.lost_order_events(
                    coid, order.symbol, "in none of the open orders, completed orders and executions"):
                self._tell(event)
            return
        if working and working[0].orderStatus.status in _WORKING:
            record = self._adopt(working[0])
            if not record.accepted:
                record.accepted = True
                self._tell(self._accepted(record))
        # Listed but not submitted yet (PendingSubmit): no answer, it stays in flight.
        total = order.quantity
        for fill in executed:
            if fill.execution.execId in self._published:
                continue  # delivered before: nothing counts twice
            message = self._filled(coid, order.symbol, fill, total)
            if message is not None:
                self._note_published(message.fill_id)
                self._tell(message)
        if done and not working:
            status = done[0].orderStatus.status
            record = self._adopt(done[0])
            if status in _CANCELLED and not record.done:
                record.done = True
                self._tell(OrderCancelled(client_order_id=coid, venue=self.name, symbol=order.symbol,
                                          text=f"IB status {status} (completed orders)", ts_ns=now_ns()))

    async def _spawn_positions(self, request_id: str) -> None:
        self._spawn(self._report_positions(request_id), f"positions request {request_id!r}")

    async def _report_positions(self, request_id: str) -> None:
        ib = self._session()
        assert self._request_lock is not None
        async with self._request_lock:
            reported = await self._request(ib.reqPositionsAsync())
            working = await self._working_orders(ib)
        positions = []
        for position in reported:
            if position.account != self.account or position.position == 0:
                continue
            try:
                positions.append(VenuePosition(
                    venue=self.name, symbol=self._symbol_of(position.contract),
                    quantity=_decimal(position.position), average_price=_decimal(position.avgCost),
                ))
            except ValueError as exc:
                self.count_malformed(f"position {position}: {exc}")
        self._tell(VenuePositions(venue=self.name, positions=tuple(positions), request_id=request_id,
                                  ts_ns=now_ns(), open_orders=working))

    # ---- recovery after a reconnect, working orders (loop thread unless noted) -----------

    async def _working_orders(self, ib: IB) -> tuple[str, ...]:
        """This client's orders working at the venue (``reqOpenOrders``), by client order id,
        for the reconciliation (the caller holds the request lock)."""
        trades: list[IbTrade] = await self._request(ib.reqOpenOrdersAsync())
        return tuple(sorted({
            _order_name(t.order.orderRef, t.order.clientId, t.order.orderId) for t in trades
            if t.orderStatus.status not in IbOrderStatus.DoneStates
        }))

    def _carry_unfinished(self) -> None:
        """Before a new session (actor thread, no loop running): remember this client's
        orders the closing session had not seen end, for the next resync."""
        for order in self._orders.values():
            ib_order = order.trade.order
            if order.done or not (order.sent_here or ib_order.clientId == self.ib_config.client_id):
                continue
            self._carried[order.client_order_id] = _Carried(
                order.client_order_id, order.symbol, _decimal(ib_order.totalQuantity),
                ib_order.permId or order.trade.orderStatus.permId)

    def _carry_journal_orders(self) -> None:
        """Once per start (actor thread): the journal's orders of this venue that are not
        terminal are carried into the first resync, so that an order that ended at IB while
        the process was down is ended in the journal too."""
        records = self.journal_orders()
        if records is None:
            return
        carried = 0
        for record in records:
            order = record.order
            if order.client_order_id in self._carried:
                continue
            self._carried[order.client_order_id] = _Carried(
                order.client_order_id, order.symbol, order.quantity, 0, filled=record.filled_quantity)
            carried += 1
        if carried:
            self.log.info(f"connector {self.name}: {carried} open order(s) from the journal")

    async def _completed_orders(self) -> dict[str, IbTrade] | None:
        """The account's orders completed today (``reqCompletedOrders``, all of them: the
        resync does not depend on the API-only request the in-flight query makes), by client
        order id: the orderRef, else found by permId among the carried orders.
        None when IB does not answer within ``request_timeout_s``."""
        ib = self._session()
        assert self._request_lock is not None
        try:
            async with self._request_lock:
                trades: list[IbTrade] = await self._request(ib.reqCompletedOrdersAsync(False))
        except TimeoutError:
            self.count_error()
            self.log.warning(f"connector {self.name}: no answer to reqCompletedOrders within "
                             f"{self.ib_config.request_timeout_s}s; the orders that ended while the "
                             "session was down are looked for again at the next resync")
            return None
        by_perm = {carried.perm_id: coid for coid, carried in self._carried.items() if carried.perm_id}
        completed: dict[str, IbTrade] = {}
        for trade in trades:
            coid = trade.order.orderRef or by_perm.get(trade.order.permId, "")
            if coid:
                completed[coid] = trade
        return completed

    def _known_total(self, coid: str, completed: dict[str, IbTrade], cumulative: Decimal) -> Decimal:
        """The quantity of an order no longer working: the completed order's, else the
        carried record's, else the largest cumulative quantity executed (then the last
        execution leaves nothing)."""
        trade = completed.get(coid)
        if trade is not None and trade.order.totalQuantity:
            return _decimal(trade.order.totalQuantity)
        carried = self._carried.get(coid)
        return carried.total if carried is not None else cumulative

    def _end_carried(self, open_totals: dict[str, Decimal], completed: dict[str, IbTrade],
                     executed: dict[str, Decimal]) -> int:
        """End, exactly once, every carried order that ended at the venue while the session
        was down; returns how many were ended.

        Still working (open orders): the new session follows it. Completed: Filled ends by
        its executions (already delivered), Cancelled / ApiCancelled is ``OrderCancelled``,
        anything else (Inactive) ``OrderRejected`` with the venue's words. Neither open nor
        completed: fully executed ends by its executions; partly executed is
        ``OrderCancelled`` (no longer working); never executed is ``OrderRejected``: the
        venue never received it."""
        ended = 0
        for coid, carried in list(self._carried.items()):
            del self._carried[coid]
            if coid in open_totals:
                continue  # still working: this session follows it
            ended += 1
            filled = max(executed.get(coid, Decimal(0)), carried.filled)
            trade = completed.get(coid)
            message: OrderCancelled | OrderRejected | None = None
            if trade is not None:
                status = trade.orderStatus.status
                words = f"IB completed order: {status}"
                if status in _CANCELLED:
                    message = OrderCancelled(client_order_id=coid, venue=self.name, symbol=carried.symbol,
                                             text=words, ts_ns=now_ns())
                elif status != IbOrderStatus.Filled:
                    message = self._rejected(coid, carried.symbol, RejectReason.VENUE, words)
                self._orders[coid] = _Order(coid, carried.symbol, trade, accepted=True, done=True)
            elif filled < carried.total and filled > 0:
                message = OrderCancelled(
                    client_order_id=coid, venue=self.name, symbol=carried.symbol, ts_ns=now_ns(),
                    text=f"no longer working at IB after the reconnect "
                         f"({filled} of {carried.total} executed)")
            elif filled == 0:
                message = self._rejected(
                    coid, carried.symbol, RejectReason.VENUE,
                    "IB does not know the order after the reconnect (not open, not completed, no "
                    "execution): it never reached the venue")
            if message is not None:
                self.log.bind(client_order_id=coid).warning(
                    f"connector {self.name}: order {coid} ended while the session was down: "
                    f"{type(message).__name__} ({message.text})")
                self._tell(message)
        return ended

    def _note_published(self, exec_id: str) -> None:
        """An execution was delivered as a fill (loop thread)."""
        self._published[exec_id] = None
        while len(self._published) > _MAX_PUBLISHED:
            self._published.popitem(last=False)

    # ---- ib_insync events (loop thread) ----------------------------------------------------

    @_guarded
    def _on_error(self, req_id: int, code: int, text: str, contract: Contract | None) -> None:
        if self._closing:
            return
        if code == CLIENT_ID_IN_USE:
            if self._refused is not None and not self._refused.done():
                self._refused.set_result(text)
            return
        log = self.log.bind(ib_code=code, req_id=req_id, ib_text=text)
        if code in HALTING_CODES:
            log.warning(f"connector {self.name}: IB {code}: {text}")
            first = not self._halts
            self._halts[code] = text
            if first:
                self._tell(_VenueHalted(self._link.attempt, f"IB {code}: {text}"))
        elif code in RESTORING_CODES:
            log.warning(f"connector {self.name}: IB {code}: {text}")
            if code == RESTORED_DATA_LOST:
                self._resubscribe()
            if self._halts:
                self._halts.clear()
                self._tell(_VenueResumed(self._link.attempt, f"IB {code}: {text}"))
        elif 2100 <= code < 2200:
            log.info(f"connector {self.name}: IB notice {code}: {text}")
        elif req_id in self._order_ids:
            self._on_order_error(self._orders[self._order_ids[req_id]], code, text)
        else:
            self.count_error()
            log.warning(f"connector {self.name}: IB error {code} (request {req_id}): {text}")

    def _on_order_error(self, order: _Order, code: int, text: str) -> None:
        if code == ORDER_CANCELLED:
            return  # the order status reports the cancel
        trade = order.trade
        entry = trade.log[-1] if trade.log else None
        # ib_insync ends an order on an IB error by cancelling it with the error's code.
        ended = (trade.orderStatus.status in IbOrderStatus.DoneStates
                 and entry is not None and entry.errorCode == code)
        if ended and not order.done and code not in CANCEL_REFUSED:
            order.done = True
            self._tell(self._rejected(order.client_order_id, order.symbol, RejectReason.VENUE,
                                      f"IB {code}: {text}"))
            return
        self.count_error()
        self.log.bind(ib_code=code, client_order_id=order.client_order_id).warning(
            f"connector {self.name}: IB {code} on order {order.client_order_id}: {text}"
        )

    @_guarded
    def _on_order_status(self, trade: IbTrade) -> None:
        order = self._adopt(trade)
        status = trade.orderStatus.status
        if order.sent_here and not order.acked_ns and status not in _LOCAL_STATES:
            order.acked_ns = now_ns()
        if order.done:
            return
        if status in _WORKING:
            if not order.accepted:
                order.accepted = True
                self._tell(self._accepted(order))
        elif status in _CANCELLED:
            entry = trade.log[-1] if trade.log else None
            if entry is not None and entry.errorCode not in (0, ORDER_CANCELLED):
                return  # ib_insync cancelled it on an IB error: the error handler decides
            order.done = True
            self._tell(OrderCancelled(client_order_id=order.client_order_id, venue=self.name,
                                      symbol=order.symbol, text=f"IB status {status}",
                                      ts_ns=now_ns()))
        elif status == IbOrderStatus.Filled:
            order.done = True

    @_guarded
    def _on_exec_details(self, trade: IbTrade, fill: Fill) -> None:
        order = self._adopt(trade)
        if order.sent_here and not order.acked_ns:
            order.acked_ns = now_ns()
        self._check_late(order.client_order_id, order.symbol,
                         order.acked_ns if order.sent_here else _ts_ns(fill.execution.time))
        message = self._filled(order.client_order_id, order.symbol, fill,
                               _decimal(trade.order.totalQuantity))
        if message is not None:
            self._note_published(message.fill_id)
            self._tell(message)

    def _check_late(self, coid: str, symbol: str, acked_ns: int) -> None:
        """On an order's first fill: a WARNING when the venue acknowledged it more than
        ``late_ack_warn_s`` after it was sent (loop thread)."""
        delay_s = self._late.acknowledged(coid, acked_ns)
        if delay_s is None:
            return
        detail = late_detail(coid, delay_s)
        self.log.bind(client_order_id=coid, delay_s=round(delay_s, 3)).warning(
            f"connector {self.name}: {detail}")
        self._tell(SafetyEvent(kind=LATE_EXECUTION, severity=Severity.WARNING, venue=self.name,
                               symbol=symbol, detail=detail, value=Decimal(f"{delay_s:.3f}"),
                               ts_ns=now_ns()))

    @_guarded
    def _on_disconnected(self) -> None:
        self._lose("IB API connection closed")

    @_guarded
    def _on_pending_tickers(self, tickers: Iterable[Ticker]) -> None:
        trades: list[Trade] = []
        received = now_ns()
        for ticker in tickers:
            symbol = self._symbols_by_con_id.get(ticker.contract.conId) if ticker.contract else None
            if symbol is not None:
                self._read_ticker(symbol, ticker, received, trades)
        self._publish_books(trades)

    def _publish_books(self, trades: list[Trade]) -> None:
        """Offer what the books say now (and ``trades``); come back when a held book is due."""
        quotes = self._books.take(now_ns())
        if quotes or trades:
            dropped = self._gate.offer(quotes, trades)
            if dropped:
                self.count_drop(dropped)
            self._flush_quotes()
        due = self._books.next_due_ns()
        if due is not None and self._book_timer is None and self._loop is not None:
            delay_s = max(0.0, (due - now_ns()) / 1e9)
            self._book_timer = asyncio.get_running_loop().call_later(delay_s, self._on_book_due)

    @_guarded
    def _on_book_due(self) -> None:
        self._book_timer = None
        self._publish_books([])

    def _flush_quotes(self) -> None:
        batch = self._gate.take()
        if batch is not None:
            quotes, trades = batch
            self._tell(QuoteBatch(venue=self.name, quotes=quotes, trades=trades, recv_ns=now_ns()))

    # ---- conversions (loop thread) ---------------------------------------------------------

    def _read_ticker(self, symbol: str, ticker: Ticker, received: int, trades: list[Trade]) -> None:
        """Apply one ticker's ticks of this read to the symbol's book; collect its trades."""
        book = self._books.book(symbol)
        for tick in ticker.ticks:
            kind, price, size = tick.tickType, tick.price, tick.size
            try:
                if kind in _BID_PRICE_TICKS or kind in _ASK_PRICE_TICKS:
                    bid = kind in _BID_PRICE_TICKS
                    if price == _NO_PRICE:  # IB: no bid (ask) at the moment
                        (book.clear_bid if bid else book.clear_ask)(received)
                    else:
                        (book.set_bid if bid else book.set_ask)(_decimal(price), _decimal(size), received)
                elif kind in _BID_SIZE_TICKS:
                    book.set_bid_size(_decimal(size), received)
                elif kind in _ASK_SIZE_TICKS:
                    book.set_ask_size(_decimal(size), received)
                elif kind in _LAST_TICKS:
                    if not _is_price(price) or price <= 0:
                        raise ValueError(f"last price {price}")
                    trades.append(book.trade(_decimal(price), _decimal(size), received))
            except (ValueError, ArithmeticError, TypeError) as exc:
                self.count_malformed(f"{symbol}: tick type {kind} price {price} size {size}: {exc}")

    def _adopt(self, trade: IbTrade) -> _Order:
        """This session's record of an IB order, made when first seen."""
        coid = _order_name(trade.order.orderRef, trade.order.clientId, trade.order.orderId)
        order = self._orders.get(coid)
        if order is None:
            order = self._orders[coid] = _Order(coid, self._symbol_of(trade.contract), trade)
            if trade.order.clientId == self.ib_config.client_id and trade.order.orderId:
                self._order_ids[trade.order.orderId] = coid
        order.trade = trade
        return order

    def _symbol_of(self, contract: Contract) -> str:
        return self._symbols_by_con_id.get(contract.conId) or contract.symbol

    def _accepted(self, order: _Order) -> OrderAccepted:
        ib_order = order.trade.order
        venue_order_id = order.trade.orderStatus.permId or ib_order.permId or ib_order.orderId
        return OrderAccepted(client_order_id=order.client_order_id, venue=self.name, symbol=order.symbol,
                             venue_order_id=str(venue_order_id), ts_ns=now_ns())

    def _filled(self, coid: str, symbol: str, fill: Fill,
                total: Decimal) -> OrderFilled | FillCorrected | None:
        execution = fill.execution
        try:
            side = _EXECUTION_SIDES[execution.side]
            leaves = max(total - _decimal(execution.cumQty), Decimal(0))
            head, revision = _exec_revision(execution.execId)
            latest = self._exec_revisions.get(head)
            if latest is not None and _exec_revision(latest)[1] > revision:
                return None  # an older revision of an execution already corrected
            self._exec_revisions[head] = execution.execId
            if revision > 1:
                if latest == execution.execId:
                    return None  # the correction reported again (a resync): published already
                return self._corrected(coid, symbol, fill, side,
                                       latest or _previous_exec_id(head, revision))
            return OrderFilled(
                client_order_id=coid, venue=self.name, fill_id=execution.execId, symbol=symbol,
                side=side, quantity=_decimal(execution.shares), price=_decimal(execution.price),
                leaves_quantity=leaves, venue_order_id=str(execution.permId or execution.orderId),
                ts_ns=_ts_ns(execution.time),
            )
        except (KeyError, ValueError, ArithmeticError) as exc:
            self.count_malformed(f"execution {execution}: {exc!r}")
            return None

    def _corrected(self, coid: str, symbol: str, fill: Fill, side: Side, previous: str) -> FillCorrected:
        """A later revision of an execution: IB's correction of ``previous`` (a WARNING)."""
        execution = fill.execution
        corrected = FillCorrected(
            client_order_id=coid, venue=self.name, fill_id=previous, correction_id=execution.execId,
            symbol=symbol, side=side, quantity=_decimal(execution.shares), price=_decimal(execution.price),
            cumulative_quantity=_decimal(execution.cumQty), average_price=_decimal(execution.avgPrice),
            venue_order_id=str(execution.permId or execution.orderId), text="IB execution correction",
            ts_ns=_ts_ns(execution.time),
        )
        what = (f"execution {previous} of {coid} corrected as {execution.execId}: "
                f"{corrected.quantity} at {corrected.price}")
        self.log.warning(f"connector {self.name}: {what}")
        self._tell(SafetyEvent(kind="trade_correction", severity=Severity.WARNING, detail=what,
                               venue=self.name, symbol=symbol, ts_ns=now_ns()))
        return corrected

    def _rejected(self, coid: str, symbol: str, reason: RejectReason, text: str) -> OrderRejected:
        return OrderRejected(client_order_id=coid, venue=self.name, reason=reason, text=text,
                             symbol=symbol, ts_ns=now_ns())

