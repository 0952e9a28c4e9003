"""A fake Trader Workstation: Interactive Brokers' TWS API wire protocol over loopback TCP,
backed by the simulated ``VenueEngine``.

Unmodified IB API clients (the official ``ibapi`` 9.81 from PyPI, ib_insync 0.9.86 and
ib_async 2.1 are the ones tested) connect, synchronise, qualify stock and FX contracts,
stream quotes, place, modify, cancel and mass-cancel orders, and read positions, executions
and the account, as they would against a real TWS or IB Gateway. Switches make it behave
the way a real TWS can (``TwsBehaviour``, the test hooks below, docs/tws-venue.md).

Wire protocol, as spoken here
-----------------------------
* Handshake: the client sends ``b"API\0"`` then one length-prefixed frame ``v<min>..<max>``
  (optionally followed by connect options). The venue answers one frame with two fields:
  the server version it chose and the connection time.
* Version negotiation: the venue speaks server versions ``MIN_SERVER_VERSION`` (157) to
  ``SERVER_VERSION`` (176) and chooses the highest one the client's range includes, as TWS
  does: the official client (v100..157) gets 157, ib_insync (v157..176) and ib_async
  (v157..178) get 176. A range with no version in common is refused (the socket closes).
  Every message is written in the chosen version's format (``venues.tws_wire.Wire``).
* Every later message is a frame: a 4-byte big-endian length, then NUL-terminated text
  fields. The first field is the message id; many requests and some replies carry a
  message version as the second field (see ``TwsVenue._routes`` and ``Wire.head``).
* The session starts with ``startApi`` (id 71, carrying the client id). The venue answers
  ``nextValidId`` and ``managedAccounts``; a client id that is already connected is refused
  with error 326 and the socket is closed.

Incoming message ids handled (one handler each, see ``TwsVenue._routes``):
1 reqMktData, 2 cancelMktData, 3 placeOrder (new or modification), 4 cancelOrder,
5 reqOpenOrders, 6 reqAccountUpdates, 7 reqExecutions, 8 reqIds, 9 reqContractDetails,
15 reqAutoOpenOrders, 16 reqAllOpenOrders, 17 reqManagedAccts, 49 reqCurrentTime,
58 reqGlobalCancel, 59 reqMarketDataType, 61 reqPositions, 62 reqAccountSummary,
63 cancelAccountSummary, 64 cancelPositions, 71 startApi, 74 reqPositionsMulti,
75 cancelPositionsMulti, 76 reqAccountUpdatesMulti, 77 cancelAccountUpdatesMulti,
80 reqFamilyCodes, 82 reqMktDepthExchanges, 85 reqNewsProviders (these three answer empty
lists), 99 reqCompletedOrders. Requests not served that carry a request id (historical
data, PnL, matching symbols, market depth, tick-by-tick, fundamentals, ...; see
``venues.tws_wire.UNSUPPORTED_REQUESTS``) are answered with an error under their own
request id: 162 for historical data, 354 for market data not subscribed, 430 for
fundamentals, 321 for the rest. Their cancels are read and dropped.

Outgoing message ids sent: 1 tickPrice, 2 tickSize, 3 orderStatus, 4 errMsg, 5 openOrder,
6 updateAccountValue, 7 updatePortfolio, 8 updateAccountTime, 9 nextValidId,
10 contractDetails, 11 execDetails, 15 managedAccounts, 49 currentTime, 52 contractDetailsEnd,
53 openOrderEnd, 54 accountDownloadEnd, 55 execDetailsEnd, 57 tickSnapshotEnd,
58 marketDataType, 59 commissionReport, 61 position, 62 positionEnd, 63 accountSummary,
64 accountSummaryEnd, 71 positionMulti, 72 positionMultiEnd, 73 accountUpdateMulti,
74 accountUpdateMultiEnd, 78 familyCodes, 80 mktDepthExchanges, 85 newsProviders,
101 completedOrder, 102 completedOrdersEnd.

Error codes used: 103 duplicate order id, 104 modification of a filled order, 105
modification refused (contract or action changed, quantity not above the filled part),
161 cancel of an order that is not working, 162 / 354 / 430 / 321 requests not served,
200 unknown contract, 201 order rejected, 202 order cancelled, 320 malformed request, 321
request refused (unknown message id, request before startApi, unknown account or account
group), 326 client id already in use, 1100 / 1101 / 1102 / 2110 connectivity (injected),
2104 market data farm OK (notice), 10147 cancel of an unknown order id.

Mapping to the engine
---------------------
* One IB account (``account``) is one engine account.
* IB order ``(clientId, orderId)`` <-> engine ``client_order_id``: the order's ``orderRef``
  when the client set one, else ``f"ib-{clientId}-{orderId}"`` (IB order ids are scoped per
  client id, and two clients that connected at the same ``nextValidId`` do reuse the same
  numbers). A reference already in use is refused with error 103.
* A modification (placeOrder with the id of a working order) keeps the orderId, permId and
  the fills so far; at the engine the working order is cancelled and, once the cancel is
  confirmed, replaced by one for the rest of the quantity, named
  ``f"{client_order_id}~{n}"``. If the order fills or ends before its cancel takes effect
  (engine latency), the modification is refused (104 when filled) and the order is what it
  was; it never fills above its quantity. A modification waiting for its cancel is lost if
  the venue stops in between (the order then shows no working engine order).
* Engine fill ids are the IB execution ids; a correction adds a revision after a final
  period (``tws-7.02``). IB permIds are allocated here.
* Order ids, permIds, the order table and corrections are kept in ``state_path`` (JSON,
  atomic write), so that a restarted venue keeps handing out fresh order ids and still
  names old orders and executions the way it did; the engine keeps positions and
  executions in its own state.

Not supported (answered with error 201): what-if orders, untransmitted, child
(``parentId``) and OCA orders, order types other than MKT, LMT, STP and STP LMT, time in
force other than DAY, GTC, IOC and FOK. ``reqCompletedOrders`` answers the account's
orders done today (UTC), with apiOnly those placed through the API, each a completedOrder
in the negotiated version's layout, then its end marker. Algo
strategies and other order attributes not named here are accepted and ignored.
Commissions are reported as zero. The account is one USD margin account
(``venues.tws_account``). Each venue serves one account; the order table grows for the
life of the state file.

Threading: the venue runs one asyncio loop in its own thread; every session and the order
table live on that loop. Engine listeners (called from any thread) hand their events to the
loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from messages import (
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
    OrderFilled,
    OrderRejected,
    OrderType,
    Quote,
    Side,
    SubmitOrder,
    TimeInForce,
)
from venues.tws_account import AccountFigures, Holding, account_figures
from venues.tws_behaviour import TwsBehaviour, step_volatility_bps
from venues.tws_wire import (
    HANDSHAKE_PREFIX,
    IGNORED_REQUESTS,
    MAX_FRAME,
    MIN_SERVER_VERSION,
    NO_REQUEST,
    SERVER_VERSION,
    UNSUPPORTED_REQUESTS,
    ContractQuery,
    ErrorCode,
    Fields,
    In,
    MalformedRequest,
    Out,
    ProtocolViolation,
    TickType,
    Wire,
    encode_frame,
    ib_time,
    negotiate_version,
)

if TYPE_CHECKING:

    from venues.engine import VenueEngine

__all__ = [
    "MIN_SERVER_VERSION",
    "SERVER_VERSION",
    "ErrorCode",
    "In",
    "MalformedRequest",
    "Out",
    "TwsBehaviour",
    "TwsVenue",
    "encode_frame",
    "main",
]

log = logging.getLogger("tradeguard.venues.tws")


MAX_WRITE_BUFFER = 16 * 1024 * 1024
"""A client that lets this many bytes pile up unread is dropped."""

STATE_SAVE_INTERVAL_S = 0.5
"""How often the order table is written when it changed."""

ACCOUNT_UPDATE_DELAY_S = 0.1
"""Account values and summaries are sent this long after an execution, once for a burst
(TWS itself refreshes them every few minutes)."""

_CONNECTIVITY_TEXTS = {
    1100: "Connectivity between IB and Trader Workstation has been lost.",
    1101: "Connectivity between IB and Trader Workstation has been restored - data lost.",
    1102: "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    2110: "Connectivity between Trader Workstation and server is broken. "
          "It will be restored automatically.",
}
"""The connectivity codes ``inject_error`` sends, with TWS's texts."""

_CURRENCIES = frozenset(
    {"USD", "EUR", "GBP", "JPY", "CHF", "AUD", "CAD", "NZD", "SEK", "NOK", "DKK", "HKD",
     "SGD", "CNH", "MXN", "ZAR", "PLN", "CZK", "HUF", "TRY", "ILS"}
)
_ORDER_TYPES = {
    "MKT": OrderType.MARKET,
    "LMT": OrderType.LIMIT,
    "STP": OrderType.STOP,
    "STP LMT": OrderType.STOP_LIMIT,
}
_IB_ORDER_TYPES = {value: key for key, value in _ORDER_TYPES.items()}
_TIME_IN_FORCE = {
    "": TimeInForce.DAY,
    "DAY": TimeInForce.DAY,
    "GTC": TimeInForce.GTC,
    "IOC": TimeInForce.IOC,
    "FOK": TimeInForce.FOK,
    "GTD": TimeInForce.GTC,  # works until its goodTillDate (checked on arrival)
}
_ACTIONS = {"BUY": Side.BUY, "SELL": Side.SELL, "SSHORT": Side.SELL}


def good_till_ns(good_till: str) -> int:
    """Wall-clock nanoseconds of a ``goodTillDate`` (formats as for ``gtd_problem``); 0 when
    it cannot be read."""
    text = good_till.strip().removesuffix(" UTC").strip()
    for layout in ("%Y%m%d %H:%M:%S", "%Y%m%d-%H:%M:%S"):
        try:
            return int(datetime.strptime(text, layout).replace(tzinfo=UTC).timestamp()) * 1_000_000_000
        except ValueError:
            continue
    return 0


def gtd_problem(good_till: str, now_ns: int) -> str:
    """Why a GTD order with this ``goodTillDate`` is refused on arrival at ``now_ns``, or ""
    when it is still good. Formats: ``YYYYMMDD HH:MM:SS`` with an optional ``UTC`` (the
    time is UTC either way: this venue has no exchange time zone), or ``YYYYMMDD-HH:MM:SS``."""
    if not good_till.strip():
        return "a GTD order needs a goodTillDate"
    expires_ns = good_till_ns(good_till)
    if not expires_ns:
        return f"goodTillDate {good_till!r} is not YYYYMMDD HH:MM:SS"
    if expires_ns <= now_ns:
        return f"the order expired on its goodTillDate {good_till} before it arrived"
    return ""


@dataclass(frozen=True)
class _Instrument:
    """One engine symbol as an IB contract."""

    symbol: str
    """The engine's symbol."""
    con_id: int
    ib_symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    min_tick: Decimal

    @classmethod
    def from_symbol(cls, symbol: str, min_tick: Decimal) -> _Instrument:
        """Stocks trade SMART in USD; six-letter currency pairs are IDEALPRO cash."""
        con_id = zlib.crc32(symbol.encode()) % 900_000_000 + 100_000
        base, quote = symbol[:3], symbol[3:]
        if len(symbol) == 6 and base in _CURRENCIES and quote in _CURRENCIES:
            return cls(symbol, con_id, base, "CASH", "IDEALPRO", "", quote, f"{base}.{quote}",
                       min_tick)
        return cls(symbol, con_id, symbol, "STK", "SMART", "NASDAQ", "USD", symbol, min_tick)

    def matches(self, query: ContractQuery) -> bool:
        """True when the client's contract names this instrument."""
        if query.con_id:
            return query.con_id == self.con_id and query.symbol in ("", self.ib_symbol)
        named = query.symbol == self.ib_symbol or (
            not query.symbol and query.local_symbol == self.local_symbol
        )
        return (
            named
            and query.sec_type in ("", self.sec_type)
            and query.currency in ("", self.currency)
            and query.exchange in ("", "SMART", self.exchange, self.primary_exchange)
        )

    def fields(self) -> list[object]:
        """conId .. tradingClass as positions, executions and open orders carry them."""
        return [
            self.con_id, self.ib_symbol, self.sec_type, "", "0", "", "",
            self.exchange, self.currency, self.local_symbol, self.local_symbol,
        ]


class _OrderRecord(msgspec.Struct, kw_only=True):
    """One order as the IB side knows it; persisted in the venue state file."""

    client_order_id: str
    order_id: int
    client_id: int
    perm_id: int
    symbol: str
    action: str
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: str = "DAY"
    order_ref: str = ""
    status: str = "PendingSubmit"
    filled: Decimal = Decimal(0)
    avg_price: Decimal = Decimal(0)
    last_fill_price: Decimal = Decimal(0)
    cancel_requested: bool = False
    engine_id: str = ""
    """The engine order working for it now; empty: ``client_order_id`` (never modified)."""
    replaced: list[str] = []
    """Engine orders it worked as before each modification, oldest first."""
    completed_ns: int = 0
    """When it became done (wall clock ns); 0 while working (and for orders of state files
    written before this was kept: never reported as completed)."""
    completed_status: str = ""
    """Why it is done, in words (completedOrder's ``completedStatus``)."""
    silent_cancel: bool = False
    """The venue cancels it without telling any client (``cancel_at_venue(silent=True)``)."""
    good_till_ns: int = 0
    """The goodTillDate of a GTD order (wall-clock nanoseconds); 0 for any other."""

    @property
    def working_id(self) -> str:
        """The engine's id of the order working for it now."""
        return self.engine_id or self.client_order_id

    @property
    def is_done(self) -> bool:
        """Filled, cancelled or rejected: nothing more can happen to it."""
        return self.status in ("Filled", "Cancelled", "Inactive")

    @property
    def remaining(self) -> Decimal:
        """Quantity still working."""
        return Decimal(0) if self.is_done else self.quantity - self.filled


class _Correction(msgspec.Struct, kw_only=True):
    """A correction of one execution: IB's execId with a later revision, a new price."""

    exec_id: str
    price: Decimal


@dataclass
class _Replacement:
    """A modification waiting for the engine to confirm the cancel of the order it replaces;
    what the order was before, to restore if that cancel is refused."""

    record: _OrderRecord
    order: SubmitOrder
    """The replacement, its quantity set when the cancel is confirmed."""
    quantity: Decimal
    order_type: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    tif: str
    cancelled: bool = False
    """The client cancelled the order meanwhile: no replacement is submitted."""


class _VenueState(msgspec.Struct, kw_only=True):
    """What the venue persists across restarts."""

    next_order_id: int = 1
    next_perm_id: int = 1_000_001
    orders: list[_OrderRecord] = []
    corrections: dict[str, list[_Correction]] = {}
    """Engine fill id -> its corrections, oldest first; the last one is in force."""


@dataclass(eq=False)
class _Session:
    """One client socket."""

    writer: asyncio.StreamWriter
    peer: str
    client_id: int | None = None
    wire: Wire = field(default_factory=lambda: Wire(SERVER_VERSION))
    """The message formats of the server version agreed at the handshake."""
    market_data: dict[int, str] = field(default_factory=dict)
    """reqId -> engine symbol of each live market data subscription."""
    last_ticks: dict[int, tuple[Decimal, Decimal, Decimal, Decimal]] = field(default_factory=dict)
    """reqId -> (bid, bid size, ask, ask size) last sent."""
    positions_subscribed: bool = False
    account_subscribed: bool = False
    account_summaries: dict[int, frozenset[str]] = field(default_factory=dict)
    """reqId -> tags of each live account summary subscription."""
    closing: bool = False


@dataclass(frozen=True)
class _Route:
    """One incoming message id: its handler and whether a version field follows the id."""

    handler: Callable[[_Session, Fields], None]
    versioned: bool = True


def _is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TwsVenue:
    """A TWS lookalike serving IB API clients on loopback, trading on a ``VenueEngine``."""

    def __init__(
        self,
        engine: VenueEngine,
        host: str = "127.0.0.1",
        port: int = 0,
        account: str = "DU000001",
        state_path: Path | None = None,
        behaviour: TwsBehaviour | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"host: loopback only, got {host!r}")
        self.engine = engine
        self.behaviour = behaviour if behaviour is not None else TwsBehaviour()
        """The switches in force; ``configure`` changes them on a running venue."""
        self.host = host
        self.account = account
        self.state_path = state_path
        self._requested_port = port
        self._port = 0
        self._instruments = {
            symbol: _Instrument.from_symbol(symbol, engine.config.tick_size)
            for symbol in engine.symbols
        }
        self._state = _VenueState()
        self._by_coid: dict[str, _OrderRecord] = {}
        self._by_key: dict[tuple[int, int], _OrderRecord] = {}
        self._load_state()
        self._dirty = False
        self._sessions: set[_Session] = set()
        self._clients: dict[int, _Session] = {}
        self._clients_lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._saver: asyncio.Task[None] | None = None
        self.malformed_requests = 0
        """Requests that could not be read or handled, plus streams that were not IB's
        protocol; each was logged and answered (or its socket closed)."""
        self.unsupported_requests = 0
        """Requests of a kind this venue does not serve, each answered with an error under
        its own request id."""
        self.dropped_orders: list[tuple[int, int]] = []
        """(clientId, orderId) of every placeOrder lost in flight by the drop switch."""
        self.completed_orders_ignored = 0
        """reqCompletedOrders left unanswered by ``ignore_completed_orders``."""
        self._drop_next = 0
        self._random = random.Random(self.behaviour.seed)
        self._connectivity_lost = False
        """Between an injected 1100/2110 and the 1101/1102 that ends it: no market data."""
        self._external_orders = 0
        self._account_update_due = False
        self._replacements: dict[str, _Replacement] = {}
        """Engine id of a replaced order -> its modification, until the cancel is confirmed."""
        self._cash_flow = Decimal(0)
        """What executions (at their corrected prices) added to the initial cash."""
        self._cash_counted: int | None = None
        """How many of the account's executions ``_cash_flow`` holds (None: not summed yet)."""
        self._routes: dict[int, _Route] = {
            In.REQ_MKT_DATA: _Route(self._req_mkt_data),
            In.CANCEL_MKT_DATA: _Route(self._cancel_mkt_data),
            In.PLACE_ORDER: _Route(self._place_order, versioned=False),
            In.CANCEL_ORDER: _Route(self._cancel_order),
            In.REQ_OPEN_ORDERS: _Route(self._req_open_orders),
            In.REQ_ACCOUNT_UPDATES: _Route(self._req_account_updates),
            In.REQ_EXECUTIONS: _Route(self._req_executions),
            In.REQ_IDS: _Route(self._req_ids),
            In.REQ_CONTRACT_DETAILS: _Route(self._req_contract_details),
            In.REQ_AUTO_OPEN_ORDERS: _Route(self._ignore),
            In.REQ_ALL_OPEN_ORDERS: _Route(self._req_all_open_orders),
            In.REQ_MANAGED_ACCTS: _Route(self._req_managed_accts),
            In.REQ_CURRENT_TIME: _Route(self._req_current_time),
            In.REQ_GLOBAL_CANCEL: _Route(self._req_global_cancel),
            In.REQ_MARKET_DATA_TYPE: _Route(self._ignore),
            In.REQ_POSITIONS: _Route(self._req_positions),
            In.REQ_ACCOUNT_SUMMARY: _Route(self._req_account_summary),
            In.CANCEL_ACCOUNT_SUMMARY: _Route(self._cancel_account_summary),
            In.CANCEL_POSITIONS: _Route(self._cancel_positions),
            In.START_API: _Route(self._start_api),
            In.REQ_POSITIONS_MULTI: _Route(self._req_positions_multi),
            In.CANCEL_POSITIONS_MULTI: _Route(self._ignore),
            In.REQ_ACCOUNT_UPDATES_MULTI: _Route(self._req_account_updates_multi),
            In.CANCEL_ACCOUNT_UPDATES_MULTI: _Route(self._ignore),
            In.REQ_COMPLETED_ORDERS: _Route(self._req_completed_orders, versioned=False),
            In.REQ_FAMILY_CODES: _Route(self._req_family_codes, versioned=False),
            In.REQ_MKT_DEPTH_EXCHANGES: _Route(self._req_mkt_depth_exchanges, versioned=False),
            In.REQ_NEWS_PROVIDERS: _Route(self._req_news_providers, versioned=False),
        }

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound TCP port (0 before ``start``)."""
        return self._port

    def start(self) -> int:
        """Bind, start serving in a thread of its own, and return the bound port."""
        if self._thread is not None:
            raise RuntimeError("TwsVenue already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="tws-venue", daemon=True
        )
        self._thread.start()
        try:
            self._port = asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=5)
        except BaseException:
            self._halt_loop()
            raise
        self.engine.add_order_listener(self._on_engine_order_event)
        self.engine.add_quote_listener(self._on_engine_quotes)
        log.info("TWS venue listening on %s:%d (server version %d, account %s)",
                 self.host, self._port, SERVER_VERSION, self.account)
        return self._port

    def stop(self) -> None:
        """Close every session and the listening socket, stop the thread, save state."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        with contextlib.suppress(ValueError):
            self.engine.remove_order_listener(self._on_engine_order_event)
        with contextlib.suppress(ValueError):
            self.engine.remove_quote_listener(self._on_engine_quotes)
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=5)
        except (TimeoutError, RuntimeError) as exc:
            log.warning("TWS venue did not close cleanly: %r", exc)
        self._halt_loop()
        self._save_state()
        log.info("TWS venue on port %d stopped", self._port)

    def connected_client_ids(self) -> list[int]:
        """Client ids of the sessions that have started the API, sorted."""
        with self._clients_lock:
            return sorted(self._clients)

    def kill_connections(self) -> None:
        """Drop every client socket abruptly (for fault tests); keep listening."""
        if self._loop is None:
            return

        async def _abort_all() -> None:
            for session in list(self._sessions):
                session.writer.transport.abort()
                self._forget(session)

        asyncio.run_coroutine_threadsafe(_abort_all(), self._loop).result(timeout=5)

    # ------------------------------------------------------------------ switches and faults

    def configure(self, **changes: object) -> TwsBehaviour:
        """Change switches of ``TwsBehaviour`` on a running venue (validated as at
        construction; a bad value raises ``ValueError`` naming the field and changes
        nothing). Returns the switches now in force."""
        merged = {**msgspec.structs.asdict(self.behaviour), **changes}
        try:
            self.behaviour = msgspec.convert(merged, TwsBehaviour)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
        return self.behaviour

    def inject_error(self, code: int, text: str | None = None) -> None:
        """Send a connectivity error or notice to every API session, as TWS does when its
        link to IB changes: 1100 (TWS lost IB), 1101 (restored, market data lost: every
        subscription is dropped and must be requested again), 1102 (restored, data kept),
        2110 (TWS lost its server). Between 1100/2110 and 1101/1102 no market data is sent.
        """
        if code not in _CONNECTIVITY_TEXTS:
            raise ValueError(f"code: expected one of {sorted(_CONNECTIVITY_TEXTS)}, got {code}")
        message = text if text is not None else _CONNECTIVITY_TEXTS[code]
        self._run_in_loop(self._broadcast_error, code, message)

    def schedule_errors(self, schedule: Sequence[tuple[int, float]]) -> None:
        """``inject_error(code)`` for each (code, seconds from now), on the venue's loop."""
        for code, _ in schedule:
            if code not in _CONNECTIVITY_TEXTS:
                raise ValueError(f"code: expected one of {sorted(_CONNECTIVITY_TEXTS)}, got {code}")
        loop = self._loop
        if loop is None:
            raise RuntimeError("TwsVenue not started")
        for code, delay in schedule:
            loop.call_soon_threadsafe(loop.call_later, delay, self._guarded,
                                      self._broadcast_error, code, _CONNECTIVITY_TEXTS[code])

    def drop_next_orders(self, count: int = 1) -> None:
        """Lose the next ``count`` placeOrder messages in flight (never acknowledged)."""
        if count < 0:
            raise ValueError(f"count: must not be negative, got {count}")
        self._drop_next = count

    def external_fill(self, symbol: str, side: Side, quantity: Decimal) -> str:
        """Trade the account from elsewhere (another platform, a desk): a market order no
        API client placed, with IB order id 0. Its executions reach client id 0 and the
        master client live, every client through reqExecutions, positions and account
        values. Returns the engine's id of that order."""
        if symbol not in self._instruments:
            raise ValueError(f"symbol: not traded here: {symbol!r}")
        self._external_orders += 1
        client_order_id = f"external-{os.getpid()}-{time.time_ns()}-{self._external_orders}"
        order = SubmitOrder(
            client_order_id=client_order_id, venue=self.engine.venue, symbol=symbol, side=side,
            quantity=quantity, order_type=OrderType.MARKET, source="tws-external",
            created_ns=time.time_ns())
        # Its IB record first (symbol, side, quantity): a market order may be done before
        # the venue's loop looks for it among the working ones.
        def record() -> None:
            self._record_for(client_order_id, order)

        self._run_in_loop(record)
        self.engine.submit(self.account, order)
        return client_order_id

    def correct_execution(self, fill_id: str, price: Decimal) -> str:
        """Correct one execution's price, as IB does: a new execDetails to the order's
        clients with the same execId base and the next revision after the final period
        (``tws-7`` -> ``tws-7.02``, then ``.03``), and a commission report; reqExecutions
        reports the latest revision only. Positions keep their quantity; cash and the
        account values follow the corrected price. Returns the new execId."""
        if not price.is_finite() or price <= 0:
            raise ValueError(f"price: must be positive, got {price}")
        found = [f for f in self.engine.executions(self.account) if f.fill_id == fill_id]
        if not found:
            raise ValueError(f"fill_id: no execution {fill_id!r} in account {self.account}")
        exec_ids: list[str] = []
        self._run_in_loop(self._apply_correction, found[0], price, exec_ids)
        return exec_ids[0]

    def cancel_at_venue(self, client_order_id: str, reason: str = "cancelled at the venue", *,
                        silent: bool = False) -> None:
        """Cancel a working order at the venue itself, as an exchange or IB does (an IOC's
        remainder, a halt, a risk desk). The clients of the order that are connected get its
        orderStatus Cancelled and error 202, as from TWS; one that is disconnected learns it
        only from later requests (open orders no longer list it, completed orders do). With
        ``silent`` no client is told even while connected: the order just stops working
        (what a client sees when the venue loses the notice). Raises ``ValueError`` for an
        order that is unknown or not working."""
        record = self._by_coid.get(client_order_id)
        if record is None or record.is_done:
            raise ValueError(f"client_order_id: no working order {client_order_id!r}")
        self._run_in_loop(self._mark_venue_cancel, record, silent)
        log.warning("TWS venue: order %s cancelled at the venue%s: %s", client_order_id,
                    " without telling its clients" if silent else "", reason)
        self.engine.cancel(self.account, record.working_id)

    def _schedule_venue_cancel(self, record: _OrderRecord) -> None:
        """With ``cancel_after_s``: the venue cancels the order that long from now if it
        still works then (on the loop)."""
        after = self.behaviour.cancel_after_s
        if after > 0 and self._loop is not None:
            self._loop.call_later(after, self._guarded, self._venue_cancel_due, record)

    def _venue_cancel_due(self, record: _OrderRecord) -> None:
        if record.is_done or record.cancel_requested:
            return
        self._mark_venue_cancel(record, self.behaviour.silent_cancels)
        log.warning("TWS venue: order %s cancelled by the venue after %.1fs (switch)%s",
                    record.client_order_id, self.behaviour.cancel_after_s,
                    " without telling its clients" if self.behaviour.silent_cancels else "")
        self.engine.cancel(self.account, record.working_id)

    def _mark_venue_cancel(self, record: _OrderRecord, silent: bool) -> None:
        record.silent_cancel = silent
        record.cancel_requested = True
        self._dirty = True

    def disconnect_client(self, client_id: int) -> None:
        """Drop one client's socket abruptly; its orders keep working, and what happens
        to them meanwhile reaches it only through reqExecutions / open orders later."""
        async def _abort() -> None:
            with self._clients_lock:
                session = self._clients.get(client_id)
            if session is not None:
                session.writer.transport.abort()
                self._forget(session)

        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(_abort(), self._loop).result(timeout=5)

    def _run_in_loop(self, callback: Callable[..., None], *args: object) -> None:
        """Run ``callback`` on the venue's loop and wait for it."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("TwsVenue not started")

        async def run() -> None:
            callback(*args)

        asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)

    def _broadcast_error(self, code: int, text: str) -> None:
        if code in (ErrorCode.CONNECTIVITY_LOST, ErrorCode.SERVER_CONNECTIVITY_BROKEN):
            self._connectivity_lost = True
        else:
            self._connectivity_lost = False
        log.warning("TWS venue: connectivity code %d sent to every client", code)
        for session in list(self._sessions):
            if session.client_id is None:
                continue
            if code == ErrorCode.CONNECTIVITY_RESTORED_DATA_LOST:
                session.market_data.clear()
                session.last_ticks.clear()
            self._error(session, NO_REQUEST, code, text)

    def _apply_correction(self, fill: OrderFilled, price: Decimal, exec_ids: list[str]) -> None:
        """Record a correction of ``fill`` (on the loop, where the cash is kept) and send it."""
        before = self._corrected(fill).price
        corrections = self._state.corrections.setdefault(fill.fill_id, [])
        exec_id = f"{fill.fill_id}.{len(corrections) + 2:02d}"
        corrections.append(_Correction(exec_id=exec_id, price=price))
        exec_ids.append(exec_id)
        self._dirty = True
        counted = self.engine.executions(self.account)[:self._cash_counted or 0]
        if any(f.fill_id == fill.fill_id for f in counted):  # the cash holds it at ``before``
            signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
            self._cash_flow -= signed * (price - before)
        record = self._record_for(fill.client_order_id, fill=fill)
        corrected = self._corrected(fill)
        log.warning("TWS venue: execution %s corrected as %s at %s", fill.fill_id,
                    corrected.fill_id, corrected.price)
        for session in self._recipients(record):
            self._send_execution(session, NO_REQUEST, corrected, record, record.filled,
                                 record.avg_price)
            self._send_commission(session, corrected)
        self._schedule_account_update()

    def _lose_in_flight(self) -> bool:
        """True when the switch loses this placeOrder."""
        if self._drop_next > 0:
            self._drop_next -= 1
            return True
        rate = self.behaviour.drop_order_rate
        return bool(rate) and self._random.random() < rate

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _halt_loop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None
        self._loop = None

    async def _open(self) -> int:
        self._server = await asyncio.start_server(
            self._on_connection, self.host, self._requested_port
        )
        self._saver = asyncio.create_task(self._save_periodically())
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self._sessions):
            session.writer.transport.abort()
            self._forget(session)
        if self._tasks:  # aborted sessions end by themselves; cancel any that linger
            _, lingering = await asyncio.wait(list(self._tasks), timeout=2)
            for task in lingering:
                task.cancel()
        if self._saver is not None:
            self._saver.cancel()
            await asyncio.gather(self._saver, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(STATE_SAVE_INTERVAL_S)
            if self._dirty:
                try:
                    self._save_state()
                except OSError:
                    log.exception("TWS venue: saving %s failed", self.state_path)

    # ------------------------------------------------------------------ state file

    def _load_state(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        self._state = msgspec.json.decode(self.state_path.read_bytes(), type=_VenueState)
        for record in self._state.orders:
            self._index(record)
            self._state.next_order_id = max(self._state.next_order_id, record.order_id + 1)
            self._state.next_perm_id = max(self._state.next_perm_id, record.perm_id + 1)

    def _save_state(self) -> None:
        self._dirty = False
        if self.state_path is None:
            return
        data = msgspec.json.encode(self._state)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.state_path)

    def _index(self, record: _OrderRecord) -> None:
        self._by_coid[record.client_order_id] = record
        for engine_id in (*record.replaced, record.engine_id):
            if engine_id:
                self._by_coid[engine_id] = record
        if record.order_id > 0:
            self._by_key[(record.client_id, record.order_id)] = record

    def _new_perm_id(self) -> int:
        perm_id = self._state.next_perm_id
        self._state.next_perm_id += 1
        return perm_id

    # ------------------------------------------------------------------ sessions

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = str(writer.get_extra_info("peername"))
        session = _Session(writer, peer)
        self._sessions.add(session)
        try:
            await self._handshake(reader, session)
            while not session.closing:
                fields = await self._read_message(reader)
                self._dispatch(session, fields)
        except ProtocolViolation as exc:
            self.malformed_requests += 1
            log.warning("TWS venue: closing %s: %s", peer, exc)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # the venue is stopping: this session ends here
        finally:
            self._forget(session)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _handshake(self, reader: asyncio.StreamReader, session: _Session) -> None:
        prefix = await reader.readexactly(len(HANDSHAKE_PREFIX))
        if prefix != HANDSHAKE_PREFIX:
            raise ProtocolViolation(f"expected the API prefix, got {prefix!r}")
        offer = (await self._read_frame(reader)).decode(errors="replace")
        version = negotiate_version(offer)
        session.wire = Wire(version)
        log.info("TWS venue: %s offered %s, speaking server version %d",
                 session.peer, offer[:40], version)
        session.writer.write(encode_frame([version, ib_time(0)]))

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        if not 0 < size <= MAX_FRAME:
            raise ProtocolViolation(f"frame length {size} out of range")
        return await reader.readexactly(size)

    async def _read_message(self, reader: asyncio.StreamReader) -> list[str]:
        fields = (await self._read_frame(reader)).decode(errors="replace").split("\0")
        if fields[-1] == "":
            fields.pop()
        return fields

    def _forget(self, session: _Session) -> None:
        self._sessions.discard(session)
        with self._clients_lock:
            if session.client_id is not None and self._clients.get(session.client_id) is session:
                del self._clients[session.client_id]
        session.closing = True

    def _send_many(self, session: _Session, frames: list[tuple[Out, tuple[object, ...]]]) -> None:
        """Encode several replies and write them at once."""
        if session.closing or not frames or session.writer.transport.is_closing():
            return
        session.writer.write(b"".join(session.wire.frame(msg_id, fields) for msg_id, fields in frames))
        self._check_backlog(session)

    def _send(self, session: _Session, msg_id: Out, *fields: object) -> None:
        """Encode one reply in the session's server version and write it on its own."""
        if session.closing or session.writer.transport.is_closing():
            return
        session.writer.write(session.wire.frame(msg_id, fields))
        self._check_backlog(session)

    def _check_backlog(self, session: _Session) -> None:
        transport = session.writer.transport
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("TWS venue: dropping %s, it is not reading", session.peer)
            transport.abort()
            self._forget(session)

    def _error(self, session: _Session, req_id: int, code: ErrorCode | int, text: str) -> None:
        self._send(session, Out.ERR_MSG, *session.wire.error_fields(req_id, int(code), text))

    def _dispatch(self, session: _Session, fields: list[str]) -> None:
        """Route one request to its handler; a failing request is counted, logged and
        answered with an error, and the session goes on."""
        try:
            msg_id = int(fields[0])
        except (IndexError, ValueError):
            self._refuse(session, NO_REQUEST, ErrorCode.BAD_REQUEST,
                         f"Error reading request: bad message id {fields[:1]!r}")
            return
        if session.client_id is None and msg_id != In.START_API:
            self._refuse(session, NO_REQUEST, ErrorCode.REQUEST_REFUSED,
                         f"Error validating request: message id {msg_id} before startApi")
            return
        route = self._routes.get(msg_id)
        if route is None:
            if msg_id in UNSUPPORTED_REQUESTS:
                self._answer_unsupported(session, msg_id, fields)
            elif msg_id not in IGNORED_REQUESTS:
                self._refuse(session, NO_REQUEST, ErrorCode.REQUEST_REFUSED,
                             f"Error validating request: unsupported message id {msg_id}")
            return
        cursor = Fields(fields, 2 if route.versioned else 1)
        try:
            route.handler(session, cursor)
        except MalformedRequest as exc:
            self._refuse(session, cursor.req_id, ErrorCode.BAD_REQUEST,
                         f"Error reading request: message id {msg_id}: {exc}")
        except Exception as exc:
            log.exception("TWS venue: handler for message id %d failed", msg_id)
            self._refuse(session, cursor.req_id, ErrorCode.BAD_REQUEST,
                         f"Error reading request: message id {msg_id}: {exc!r}")

    def _answer_unsupported(self, session: _Session, msg_id: int, fields: list[str]) -> None:
        """A request this venue does not serve: its error, under its own request id."""
        name, code, versioned = UNSUPPORTED_REQUESTS[msg_id]
        cursor = Fields(fields, 2 if versioned else 1)
        try:
            req_id = cursor.integer()
        except MalformedRequest as exc:
            self._refuse(session, NO_REQUEST, ErrorCode.BAD_REQUEST,
                         f"Error reading request: message id {msg_id}: {exc}")
            return
        self.unsupported_requests += 1
        log.info("TWS venue: %s (reqId %d) from client %s is not served here (error %d)",
                 name, req_id, session.client_id, code)
        texts = {
            162: "Historical Market Data Service error message:No market data permissions "
                 f"for this request ({name} is not served by this venue)",
            354: f"Requested market data is not subscribed ({name} is not served by this venue)",
            430: "We are sorry, but fundamentals data for the security specified is not "
                 "available",
        }
        self._error(session, req_id, code,
                    texts.get(code, f"Error validating request:-'{name}' is not served by this venue"))

    def _req_family_codes(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.FAMILY_CODES, 0)

    def _req_mkt_depth_exchanges(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.MKT_DEPTH_EXCHANGES, 0)

    def _req_news_providers(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.NEWS_PROVIDERS, 0)

    def _refuse(self, session: _Session, req_id: int, code: ErrorCode, text: str) -> None:
        self.malformed_requests += 1
        log.warning("TWS venue: %s from %s", text, session.peer)
        self._error(session, req_id, code, text)

    # ------------------------------------------------------------------ handlers: session

    def _ignore(self, session: _Session, fields: Fields) -> None:
        """Requests with nothing to answer here."""

    def _start_api(self, session: _Session, fields: Fields) -> None:
        client_id = fields.integer()
        if session.client_id is not None:
            raise MalformedRequest("startApi sent twice")
        with self._clients_lock:
            taken = client_id in self._clients
            if not taken:
                self._clients[client_id] = session
                session.client_id = client_id
        if taken:
            log.warning("TWS venue: client id %d already in use, refusing %s",
                        client_id, session.peer)
            self._error(session, NO_REQUEST, ErrorCode.CLIENT_ID_IN_USE,
                        "Unable to connect as the client id is already in use. "
                        "Retry with a unique client id.")
            session.closing = True
            return
        log.info("TWS venue: client %d connected from %s", client_id, session.peer)
        self._send(session, Out.NEXT_VALID_ID, self._state.next_order_id)
        self._send(session, Out.MANAGED_ACCTS, self.account)
        self._error(session, NO_REQUEST, ErrorCode.MARKET_DATA_FARM_OK,
                    "Market data farm connection is OK:simfarm")

    def _req_ids(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.NEXT_VALID_ID, self._state.next_order_id)

    def _req_managed_accts(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.MANAGED_ACCTS, self.account)

    def _req_current_time(self, session: _Session, fields: Fields) -> None:
        self._send(session, Out.CURRENT_TIME, int(time.time()))

    # ------------------------------------------------------------------ handlers: contracts

    def _resolve(self, query: ContractQuery) -> _Instrument | None:
        found = [inst for inst in self._instruments.values() if inst.matches(query)]
        return found[0] if len(found) == 1 else None

    def _unknown_contract(self, session: _Session, req_id: int, query: ContractQuery) -> None:
        self._error(session, req_id, ErrorCode.NO_SECURITY_DEFINITION,
                    f"No security definition has been found for the request: {query.describe()}")

    def _req_contract_details(self, session: _Session, fields: Fields) -> None:
        fields.req_id = fields.integer()
        query = fields.contract()
        inst = self._resolve(query)
        if inst is None:
            self._unknown_contract(session, fields.req_id, query)
            return
        size_multiplier, size_rules = session.wire.contract_details_tail(1, Decimal(1))
        self._send(
            session, Out.CONTRACT_DATA, fields.req_id,
            inst.ib_symbol, inst.sec_type, "", "0", "", inst.exchange, inst.currency,
            inst.local_symbol, inst.local_symbol, inst.local_symbol, inst.con_id, inst.min_tick,
            *size_multiplier,
            "", ",".join(_ORDER_TYPES), inst.exchange, 1, 0, f"{inst.symbol} (simulated)",
            inst.primary_exchange, "", "", "", "", "UTC", "", "", "", "", 0,
            "", "", "", "", "", "COMMON" if inst.sec_type == "STK" else "", *size_rules,
        )
        self._send(session, Out.CONTRACT_DATA_END, fields.req_id)

    # ------------------------------------------------------------------ handlers: market data

    def _req_mkt_data(self, session: _Session, fields: Fields) -> None:
        fields.req_id = fields.integer()
        query = fields.contract()
        if query.sec_type == "BAG":
            fields.skip(4 * fields.integer())
        if fields.flag():
            fields.skip(3)  # delta neutral contract
        fields.text()  # generic tick list
        snapshot = fields.flag()
        inst = self._resolve(query)
        if inst is None:
            self._unknown_contract(session, fields.req_id, query)
            return
        self._send(session, Out.MARKET_DATA_TYPE, fields.req_id, 1)
        if not snapshot:
            session.market_data[fields.req_id] = inst.symbol
        quote = self.engine.quote(inst.symbol)
        if quote is not None:
            self._send_quote_ticks(session, fields.req_id, quote)
        last = self._last_fill(inst.symbol)
        if last is not None:
            self._send(session, Out.TICK_PRICE, fields.req_id, int(TickType.LAST),
                       last.price, session.wire.size(last.quantity), 0)
        if snapshot:
            self._send(session, Out.TICK_SNAPSHOT_END, fields.req_id)

    def _cancel_mkt_data(self, session: _Session, fields: Fields) -> None:
        req_id = fields.integer()
        session.market_data.pop(req_id, None)
        session.last_ticks.pop(req_id, None)

    def _send_quote_ticks(self, session: _Session, req_id: int, quote: Quote) -> None:
        """The ticks that changed since the last quote sent for ``req_id``: tickPrice (which
        carries the size) for a new price, tickSize for a new size at the same price.

        Coalesced (the default), the whole quote is one write. Otherwise, as TWS sends
        them, every tick is a write of its own: each new price's tickPrice is followed by
        a tickSize for its size, the bid side first and the ask side
        ``quote_split_delay_s`` later."""
        previous = session.last_ticks.get(req_id)
        current = (quote.bid, quote.bid_size, quote.ask, quote.ask_size)
        if previous == current:
            return
        session.last_ticks[req_id] = current
        size = session.wire.size
        split = not self.behaviour.coalesce_quotes
        sides: list[list[tuple[Out, tuple[object, ...]]]] = []
        for price_tick, size_tick, at in ((TickType.BID, TickType.BID_SIZE, 0),
                                          (TickType.ASK, TickType.ASK_SIZE, 2)):
            frames: list[tuple[Out, tuple[object, ...]]] = []
            price_moved = previous is None or previous[at] != current[at]
            if price_moved:
                frames.append((Out.TICK_PRICE,
                               (req_id, int(price_tick), current[at], size(current[at + 1]), 0)))
            if (split and price_moved) or (previous is not None and not price_moved
                                           and previous[at + 1] != current[at + 1]):
                # Split, TWS's way: the size follows its price tick as a tickSize of its own.
                frames.append((Out.TICK_SIZE, (req_id, int(size_tick), size(current[at + 1]))))
            sides.append(frames)
        bid_frames, ask_frames = sides
        if self.behaviour.coalesce_quotes:
            self._send_many(session, bid_frames + ask_frames)
            return
        for msg_id, fields in bid_frames:
            self._send(session, msg_id, *fields)
        delay = self.behaviour.quote_split_delay_s
        if delay and ask_frames and self._loop is not None:
            self._loop.call_later(delay, self._send_frames, session, ask_frames)
        else:
            self._send_frames(session, ask_frames)

    def _send_frames(self, session: _Session, frames: list[tuple[Out, tuple[object, ...]]]) -> None:
        """Each frame in a write of its own."""
        for msg_id, fields in frames:
            self._send(session, msg_id, *fields)

    def _last_fill(self, symbol: str) -> OrderFilled | None:
        for fill in reversed(self.engine.executions(self.account)):
            if fill.symbol == symbol:
                return fill
        return None

    def _on_engine_quotes(self, quotes: list[Quote]) -> None:
        """Engine quote listener (any thread)."""
        self._call_in_loop(self._publish_quotes, quotes)

    def _publish_quotes(self, quotes: list[Quote]) -> None:
        self._expire_due()
        if self._connectivity_lost:
            return
        by_symbol = {quote.symbol: quote for quote in quotes}
        for session in list(self._sessions):
            for req_id, symbol in list(session.market_data.items()):
                quote = by_symbol.get(symbol)
                if quote is not None:
                    self._send_quote_ticks(session, req_id, quote)

    def _expire_due(self) -> None:
        """At an engine step: cancel the working GTD orders whose goodTillDate has passed
        (IB reports the order Cancelled)."""
        now = time.time_ns()
        for record in self._state.orders:
            if (record.good_till_ns and record.good_till_ns <= now and not record.cancel_requested
                    and record.status in ("Submitted", "PreSubmitted")
                    and not any(p.record is record for p in self._replacements.values())):
                record.cancel_requested = True
                self._dirty = True
                log.info("TWS venue: order %d expired on its goodTillDate", record.order_id)
                self.engine.cancel(self.account, record.working_id)

    # ------------------------------------------------------------------ handlers: orders

    def _place_order(self, session: _Session, fields: Fields) -> None:
        order_id = fields.integer()
        fields.req_id = order_id
        query = fields.contract()
        fields.skip(2)  # secIdType, secId
        action, quantity, ib_type = fields.text(), fields.decimal(), fields.text()
        limit_price, stop_price = fields.decimal(), fields.decimal()
        tif, oca_group, account = fields.text(), fields.text(), fields.text()
        fields.skip(2)  # openClose, origin
        order_ref = fields.text()
        transmit = fields.flag()
        parent_id = fields.integer(default=0)
        what_if, good_till = self._read_order_tail(fields, query)
        client_id = session.client_id
        assert client_id is not None
        if order_id <= 0:
            raise MalformedRequest(f"order id must be positive, got {order_id}")
        self._state.next_order_id = max(self._state.next_order_id, order_id + 1)
        self._dirty = True
        if self._lose_in_flight():
            self.dropped_orders.append((client_id, order_id))
            log.warning("TWS venue: placeOrder %d from client %d lost in flight (switch)",
                        order_id, client_id)
            return

        existing = self._by_key.get((client_id, order_id))
        if existing is not None and existing.is_done:
            self._refuse_reuse(session, existing)
            return
        inst = self._resolve(query)
        if inst is None:
            if existing is not None:
                self._refuse_modification(session, existing, "the contract does not match")
            else:
                self._unknown_contract(session, order_id, query)
            return
        problem = (
            "what-if orders are not supported" if what_if
            else "untransmitted orders are not supported" if not transmit
            else "child orders are not supported" if parent_id
            else "OCA groups are not supported" if oca_group
            else f"unknown account {account}" if account not in ("", self.account)
            else f"unsupported order type {ib_type!r}" if ib_type not in _ORDER_TYPES
            else f"unsupported time in force {tif!r}" if tif not in _TIME_IN_FORCE
            else gtd_problem(good_till, time.time_ns()) if tif == "GTD"
            else f"unsupported action {action!r}" if action not in _ACTIONS
            else f"bad quantity {quantity}" if quantity is None or quantity <= 0
            else ""
        )
        if existing is not None:
            self._modify(session, existing, inst, problem, action, quantity, ib_type,
                         limit_price, stop_price, tif)
            return
        if problem:
            self._reject(session, order_id, problem)
            return
        assert quantity is not None
        client_order_id = order_ref or f"ib-{client_id}-{order_id}"
        if client_order_id in self._by_coid:
            self._error(session, order_id, ErrorCode.DUPLICATE_ORDER_ID,
                        f"Duplicate order id: order reference {client_order_id!r} is in use")
            return
        order_type = _ORDER_TYPES[ib_type]
        try:
            order = SubmitOrder(
                client_order_id=client_order_id,
                venue=self.engine.venue,
                symbol=inst.symbol,
                side=_ACTIONS[action],
                quantity=quantity,
                order_type=order_type,
                limit_price=limit_price if ib_type in ("LMT", "STP LMT") else None,
                stop_price=stop_price if ib_type in ("STP", "STP LMT") else None,
                time_in_force=_TIME_IN_FORCE[tif],
                source=f"tws-client-{client_id}",
                created_ns=time.time_ns(),
            )
        except (ValueError, msgspec.ValidationError) as exc:
            self._reject(session, order_id, str(exc))
            return
        record = _OrderRecord(
            client_order_id=client_order_id,
            order_id=order_id,
            client_id=client_id,
            perm_id=self._new_perm_id(),
            symbol=inst.symbol,
            action="SELL" if action == "SSHORT" else action,
            quantity=quantity,
            order_type=ib_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            tif=tif or "DAY",
            order_ref=order_ref,
            good_till_ns=good_till_ns(good_till) if tif == "GTD" else 0,
        )
        self._state.orders.append(record)
        self._index(record)
        self.engine.submit(self.account, order)

    def _read_order_tail(self, fields: Fields, query: ContractQuery) -> tuple[bool, str]:
        """Walk the rest of a placeOrder message to its whatIf flag (the layout up to there is
        the same at every server version spoken here); also returns its goodTillDate."""
        fields.skip(6)  # blockOrder, sweepToFill, displaySize, triggerMethod, outsideRth, hidden
        if query.sec_type == "BAG":
            fields.skip(8 * fields.integer())
            fields.skip(fields.integer())
            fields.skip(2 * fields.integer())
        fields.skip(3)  # sharesAllocation, discretionaryAmt, goodAfterTime
        good_till = fields.text()
        fields.skip(26)  # faGroup .. volatilityType
        if fields.text():  # deltaNeutralOrderType
            fields.skip(9)
        else:
            fields.skip(1)
        fields.skip(6)  # continuousUpdate .. scaleSubsLevelSize
        increment = fields.decimal()
        if increment is not None and increment > 0:
            fields.skip(7)
        fields.skip(3)  # scaleTable, activeStartTime, activeStopTime
        if fields.text():  # hedgeType
            fields.skip(1)
        fields.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
        if fields.flag():  # delta neutral contract
            fields.skip(3)
        if fields.text():  # algoStrategy
            fields.skip(2 * fields.integer())
        fields.skip(1)  # algoId
        return fields.flag(), good_till

    def _refuse_reuse(self, session: _Session, record: _OrderRecord) -> None:
        """placeOrder with the id of an order that is done."""
        if record.status == "Filled":
            self._error(session, record.order_id, ErrorCode.MODIFY_FILLED,
                        f"Can't modify a filled order. Order permId ={record.perm_id}")
        else:
            self._error(session, record.order_id, ErrorCode.DUPLICATE_ORDER_ID,
                        f"Duplicate order id {record.order_id}")
        self._send_order_status(session, record)

    def _refuse_modification(self, session: _Session, record: _OrderRecord, reason: str) -> None:
        """A modification TWS would refuse: error 105, and the order works on unchanged."""
        log.info("TWS venue: modification of order %d refused: %s", record.order_id, reason)
        self._error(session, record.order_id, ErrorCode.MODIFY_REFUSED,
                    f"Order being modified does not match original order: {reason}")
        self._send_order_status(session, record)

    def _modify(
        self, session: _Session, record: _OrderRecord, inst: _Instrument, problem: str,
        action: str, quantity: Decimal | None, ib_type: str, limit_price: Decimal | None,
        stop_price: Decimal | None, tif: str,
    ) -> None:
        """placeOrder with the id of a working order: the order is modified in place (same
        orderId and permId, cumulative fills kept). At the engine the working order is
        cancelled and a new one for the quantity not yet filled replaces it."""
        side = "SELL" if action == "SSHORT" else action
        reason = (
            problem if problem
            else "the contract does not match" if inst.symbol != record.symbol
            else "the action does not match" if side != record.action
            else f"the quantity {quantity} is not above the {record.filled} already filled"
            if quantity is None or quantity <= record.filled
            else ""
        )
        if reason:
            self._refuse_modification(session, record, reason)
            return
        assert quantity is not None
        engine_id = f"{record.client_order_id}~{len(record.replaced) + 1}"
        try:
            order = SubmitOrder(
                client_order_id=engine_id,
                venue=self.engine.venue,
                symbol=inst.symbol,
                side=_ACTIONS[action],
                quantity=quantity - record.filled,
                order_type=_ORDER_TYPES[ib_type],
                limit_price=limit_price if ib_type in ("LMT", "STP LMT") else None,
                stop_price=stop_price if ib_type in ("STP", "STP LMT") else None,
                time_in_force=_TIME_IN_FORCE[tif],
                source=f"tws-client-{record.client_id}",
                created_ns=time.time_ns(),
            )
        except (ValueError, msgspec.ValidationError) as exc:
            self._refuse_modification(session, record, str(exc))
            return
        if any(pending.record is record for pending in self._replacements.values()):
            self._refuse_modification(session, record,
                                      "the previous modification is still in progress")
            return
        previous = record.working_id
        self._replacements[previous] = _Replacement(
            record=record, order=order, quantity=record.quantity, order_type=record.order_type,
            limit_price=record.limit_price, stop_price=record.stop_price, tif=record.tif)
        record.replaced.append(previous)
        record.engine_id = engine_id
        record.quantity = quantity
        record.order_type = ib_type
        record.limit_price = order.limit_price
        record.stop_price = order.stop_price
        record.tif = tif or "DAY"
        self._index(record)
        log.info("TWS venue: order %d of client %d modified: %s %s %s", record.order_id,
                 record.client_id, quantity, ib_type, order.limit_price or order.stop_price or "")
        self.engine.cancel(self.account, previous)

    def _complete_modification(self, pending: _Replacement) -> None:
        """The replaced engine order is cancelled: the replacement works the rest."""
        record = pending.record
        rest = record.quantity - record.filled
        if pending.cancelled:
            record.status = "Cancelled"
            for session in self._recipients(record):
                self._send_order_status(session, record)
                self._error(session, record.order_id, ErrorCode.ORDER_CANCELLED,
                            "Order Canceled - reason:cancelled during a modification")
            return
        if rest <= 0:  # filled up to the new quantity while the cancel was on its way
            record.status = "Filled"
            for session in self._recipients(record):
                self._send_order_status(session, record)
            return
        self.engine.submit(self.account, msgspec.structs.replace(pending.order, quantity=rest))

    def _abandon_modification(self, pending: _Replacement, reason: str) -> None:
        """The replaced engine order could not be cancelled (it filled or ended first): the
        modification is refused and the order is what it was."""
        record = pending.record
        record.engine_id = record.replaced.pop()
        if record.engine_id == record.client_order_id:
            record.engine_id = ""
        record.quantity, record.order_type = pending.quantity, pending.order_type
        record.limit_price, record.stop_price = pending.limit_price, pending.stop_price
        record.tif = pending.tif
        record.status = "Filled" if record.filled >= record.quantity else "Cancelled"
        log.warning("TWS venue: modification of order %d refused: %s", record.order_id, reason)
        for session in self._recipients(record):
            if record.status == "Filled":
                self._error(session, record.order_id, ErrorCode.MODIFY_FILLED,
                            f"Can't modify a filled order. Order permId ={record.perm_id}")
            else:
                self._error(session, record.order_id, ErrorCode.MODIFY_REFUSED,
                            f"Order being modified does not match original order: {reason}")
            self._send_order_status(session, record)

    def _reject(self, session: _Session, order_id: int, reason: str) -> None:
        log.info("TWS venue: order %d rejected: %s", order_id, reason)
        self._error(session, order_id, ErrorCode.ORDER_REJECTED,
                    f"Order rejected - reason:{reason}")

    def _cancel_order(self, session: _Session, fields: Fields) -> None:
        order_id = fields.integer()
        fields.req_id = order_id
        assert session.client_id is not None
        record = self._by_key.get((session.client_id, order_id))
        if record is None:
            self._error(session, order_id, ErrorCode.CANCEL_UNKNOWN_ORDER,
                        f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        if record.is_done:
            self._error(session, order_id, ErrorCode.NOT_CANCELLABLE,
                        "Cancel attempted when order is not in a cancellable state. "
                        f"Order permId ={record.perm_id}")
            return
        record.cancel_requested = True
        pending = [p for p in self._replacements.values() if p.record is record]
        if pending:  # the engine order is being replaced: cancel the replacement instead
            pending[0].cancelled = True
            return
        self.engine.cancel(self.account, record.working_id)

    def _req_global_cancel(self, session: _Session, fields: Fields) -> None:
        if self.behaviour.ignore_global_cancel:
            log.warning("TWS venue: global cancel from client %s ignored (switch)",
                        session.client_id)
            return
        for record in self._by_coid.values():
            if not record.is_done:
                record.cancel_requested = True
        count = self.engine.cancel_all(self.account)
        log.info("TWS venue: global cancel from client %s: %d orders", session.client_id, count)

    def _req_open_orders(self, session: _Session, fields: Fields) -> None:
        self._send_open_orders(session, only_own=True)

    def _req_all_open_orders(self, session: _Session, fields: Fields) -> None:
        self._send_open_orders(session, only_own=False)

    def _send_open_orders(self, session: _Session, *, only_own: bool) -> None:
        records = [self._record_for(w.order.client_order_id, w.order)
                   for w in self.engine.open_orders(self.account)]
        # Received and not at the book yet (the engine's latency): TWS lists them too.
        records += [r for r in self._state.orders if r.status == "PendingSubmit" and not r.is_done
                    and self.engine.is_pending(self.account, r.working_id) and r not in records]
        for record in records:
            if record.is_done:
                continue
            if only_own and record.client_id != session.client_id:
                continue
            self._send_open_order(session, record)
            self._send_order_status(session, record)
        self._send(session, Out.OPEN_ORDER_END)

    def _req_completed_orders(self, session: _Session, fields: Fields) -> None:
        """The orders of the account that became done today (UTC day), whichever client
        placed them, oldest first; with apiOnly, only those placed through the API. Then the
        end marker. TWS keeps no completed order from an earlier day."""
        api_only = fields.flag()
        if api_only and self.behaviour.ignore_completed_orders:
            self.completed_orders_ignored += 1
            return
        day_start = _day_start_ns(time.time_ns())
        for record in self._state.orders:
            if not record.is_done or record.completed_ns < day_start:
                continue
            if api_only and record.order_id <= 0:
                continue  # entered elsewhere (not through the API)
            self._send_completed_order(session, record)
        self._send(session, Out.COMPLETED_ORDERS_END)

    def _stamp_completed(self, record: _OrderRecord, text: str) -> None:
        """Note when and why an order became done (once), for completed orders."""
        if record.is_done and not record.completed_ns:
            record.completed_ns = time.time_ns()
            record.completed_status = text
            self._dirty = True

    def _send_completed_order(self, session: _Session, record: _OrderRecord) -> None:
        """completedOrder (no message version): the contract, the order's fields as IB
        lists them for a completed order (no order id, no client id), unused ones empty,
        its status, filled quantity, completion time and words."""
        inst = self._instruments.get(record.symbol) or _Instrument.from_symbol(
            record.symbol or "?", Decimal("0.01"))
        fields: list[object] = [
            record.action, record.quantity, record.order_type, record.limit_price,
            record.stop_price, record.tif, "", self.account, "O", 0, record.order_ref,
            record.perm_id, 0, 0, 0, "",  # outsideRth, hidden, discretionaryAmt, goodAfterTime
            "", "", "", "", "", "", "", "", "",  # faGroup .. settlingFirm
            0, "", -1,  # shortSaleSlot, designatedLocation, exemptCode
            "", "", "", "", "",  # startingPrice .. stockRangeUpper
            0, 0, 0, "", 0, 0,  # displaySize .. triggerMethod
            "", 0, "", "",  # volatility .. deltaNeutralAuxPrice
            0, 0, "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0,  # combo legs, order combo legs, smart combo routing params
            "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
            "",  # hedgeType
            "", "", 0, 0,  # clearingAccount, clearingIntent, notHeld, no delta neutral contract
            "",  # algoStrategy
            0, record.status, 0, 0,  # solicited, status, randomizeSize, randomizePrice
            0,  # conditions
            "", "", "", 0, 0, "",  # trailStopPrice .. autoCancelDate
            record.filled, 0, 0, "", 0, 0, 0,  # filledQuantity .. parentPermId
            ib_time(record.completed_ns), record.completed_status,
            *session.wire.completed_order_tail(),
        ]
        self._send(session, Out.COMPLETED_ORDER, *inst.fields(), *fields)

    def _record_for(
        self, client_order_id: str, order: SubmitOrder | None = None,
        fill: OrderFilled | None = None,
    ) -> _OrderRecord:
        """The record of an engine order. An order not placed through this venue gets one,
        with order id 0 (IB's convention for orders entered elsewhere), when first seen."""
        record = self._by_coid.get(client_order_id)
        if record is not None:
            return record
        if order is None:
            working = [w.order for w in self.engine.open_orders(self.account)
                       if w.order.client_order_id == client_order_id]
            order = working[0] if working else None
        if order is not None:
            symbol, side, quantity = order.symbol, order.side, order.quantity
        elif fill is not None:
            symbol, side, quantity = fill.symbol, fill.side, fill.quantity + fill.leaves_quantity
        else:
            symbol, side, quantity = "", Side.BUY, Decimal(0)
        record = _OrderRecord(
            client_order_id=client_order_id,
            order_id=0,
            client_id=0,
            perm_id=self._new_perm_id(),
            symbol=symbol,
            action="BUY" if side is Side.BUY else "SELL",
            quantity=quantity,
            order_type=_IB_ORDER_TYPES[order.order_type] if order else "MKT",
            limit_price=order.limit_price if order else None,
            stop_price=order.stop_price if order else None,
            status="Submitted",
        )
        self._state.orders.append(record)
        self._index(record)
        self._dirty = True
        return record

    # ------------------------------------------------------------------ engine order events

    def _on_engine_order_event(self, account: str, event: OrderEvent) -> None:
        """Engine order listener (any thread; inside ``submit`` when latency is zero)."""
        if account == self.account:
            self._call_in_loop(self._apply_order_event, event)

    def _call_in_loop(self, callback: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us: venue stopping
            loop.call_soon_threadsafe(self._guarded, callback, *args)

    def _guarded(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("TWS venue: failed to deliver an engine event")

    def _apply_order_event(self, event: OrderEvent) -> None:
        self._dirty = True
        if isinstance(event, OrderFilled):
            self._apply_fill(event)
            return
        record = self._record_for(event.client_order_id)
        if event.client_order_id != record.working_id:
            # The engine order a modification replaced: its cancel is the modification's
            # first half (the replacement is submitted once it is confirmed), not the end
            # of the IB order.
            pending = self._replacements.pop(event.client_order_id, None)
            if pending is None:
                return
            if isinstance(event, OrderCancelled):
                self._complete_modification(pending)
            elif isinstance(event, OrderRejected):
                self._abandon_modification(pending, event.text or str(event.reason))
            else:
                self._replacements[event.client_order_id] = pending
            self._stamp_completed(record, record.status)
            return
        recipients = [] if record.silent_cancel else self._recipients(record)
        if isinstance(event, OrderAccepted):
            if record.status == "PendingSubmit":
                record.status = "Submitted"
                self._schedule_venue_cancel(record)
            for session in recipients:
                self._send_open_order(session, record)
                self._send_order_status(session, record)
        elif isinstance(event, OrderCancelled):
            record.status = "Cancelled"
            for session in recipients:
                self._send_order_status(session, record)
                self._error(session, record.order_id, ErrorCode.ORDER_CANCELLED,
                            f"Order Canceled - reason:{event.text}")
        elif isinstance(event, OrderRejected):
            if record.cancel_requested and record.status != "PendingSubmit":
                record.cancel_requested = False
                for session in recipients:
                    self._error(session, record.order_id, ErrorCode.NOT_CANCELLABLE,
                                "Cancel attempted when order is not in a cancellable state. "
                                f"Order permId ={record.perm_id}: {event.text}")
            else:
                record.status = "Inactive"
                for session in recipients:
                    self._reject(session, record.order_id, event.text or str(event.reason))
        text = getattr(event, "text", "") or ""
        self._stamp_completed(record, f"{record.status}: {text}" if text else record.status)

    def _apply_fill(self, fill: OrderFilled) -> None:
        record = self._record_for(fill.client_order_id, fill=fill)
        if not record.symbol:  # an order entered elsewhere, first seen before it was known
            record.symbol = fill.symbol
            record.action = "BUY" if fill.side is Side.BUY else "SELL"
            record.quantity = record.quantity or fill.quantity + fill.leaves_quantity
        total = record.filled + fill.quantity
        record.avg_price = (record.avg_price * record.filled + fill.price * fill.quantity) / total
        record.filled = total
        record.last_fill_price = fill.price
        if fill.leaves_quantity == 0 and fill.client_order_id == record.working_id:
            record.status = "Filled"
        elif record.status == "PendingSubmit":
            record.status = "Submitted"
        for session in self._recipients(record):
            self._send_execution(session, NO_REQUEST, fill, record, record.filled,
                                 record.avg_price)
            self._send_commission(session, fill)
            self._send_order_status(session, record)
        self._stamp_completed(record, f"Filled Size: {record.filled} Price: {record.avg_price}")
        inst = self._instruments.get(fill.symbol)
        if inst is None:
            return
        for session in list(self._sessions):
            for req_id, symbol in session.market_data.items():
                if symbol == fill.symbol and not self._connectivity_lost:
                    self._send(session, Out.TICK_PRICE, req_id, int(TickType.LAST),
                               fill.price, session.wire.size(fill.quantity), 0)
            if session.positions_subscribed:
                self._send_position(session, inst, *self._position_of(inst.symbol))
            if session.account_subscribed:
                self._send_portfolio(session, inst, *self._position_of(inst.symbol))
        self._schedule_account_update()

    def _schedule_account_update(self) -> None:
        """Account values and summaries go out once, ``ACCOUNT_UPDATE_DELAY_S`` after the
        first of a burst of executions, not once per execution."""
        if self._account_update_due or self._loop is None:
            return
        self._account_update_due = True
        self._loop.call_later(ACCOUNT_UPDATE_DELAY_S, self._guarded, self._send_account_update)

    def _send_account_update(self) -> None:
        self._account_update_due = False
        for session in list(self._sessions):
            if session.account_subscribed:
                self._send_account_values(session)
            self._send_account_summaries(session)

    def _recipients(self, record: _OrderRecord) -> list[_Session]:
        """The sessions told about an order: the client that placed it (client id 0 for
        orders placed elsewhere) and the master API client, when one is set."""
        master = self.behaviour.master_client_id
        with self._clients_lock:
            found = [self._clients.get(record.client_id)]
            if master is not None and master != record.client_id:
                found.append(self._clients.get(master))
        return [session for session in found if session is not None]

    def _send_open_order(self, session: _Session, record: _OrderRecord) -> None:
        """openOrder in the layout of the session's server version, unused fields empty."""
        inst = self._instruments.get(record.symbol) or _Instrument.from_symbol(
            record.symbol or "?", Decimal("0.01"))
        order_part: list[object] = [
            record.action, record.quantity, record.order_type, record.limit_price,
            record.stop_price, record.tif, "", self.account, "O", 0, record.order_ref,
            record.client_id, record.perm_id, 0, 0, 0, "", "",  # .. goodAfterTime, shares alloc
            "", "", "", "", "", "", "", "", "", "", "", "",  # faGroup .. exemptCode
            0, "", "", "", "", "", 0, 0, 0, 0, "", 0, 0, 0, "",  # auctionStrategy .. nbboPriceCap
            0, 0, "", "", "", "",  # parentId .. deltaNeutralAuxPrice
            0, "", "", "", "", "", "",  # continuousUpdate .. comboLegsDescrip
            0, 0, 0,  # combo legs, order combo legs, smart combo routing params
            "", "", "",  # scaleInitLevelSize, scaleSubsLevelSize, scalePriceIncrement
            "",  # hedgeType
            0, "", "", 0, 0,  # optOutSmartRouting .. notHeld, no delta neutral contract
            "",  # algoStrategy
            0, 0, record.status, "", "", "", "", "", "", "", "", "",  # solicited .. margins
            "", "", "", "", "", 0, 0,  # commissions, warningText, randomize size/price
            0,  # conditions
            "", "", "", "", "", "", "", 0, "", "", "", "", 0, 0, "", "",  # adjusted .. mgmt algo
            *session.wire.open_order_tail(),  # duration .. midOffsetAtHalf, by version
        ]
        self._send(session, Out.OPEN_ORDER, record.order_id, *inst.fields(), *order_part)

    def _send_order_status(self, session: _Session, record: _OrderRecord) -> None:
        self._send(
            session, Out.ORDER_STATUS, record.order_id, record.status, record.filled,
            record.remaining, record.avg_price, record.perm_id, 0, record.last_fill_price,
            record.client_id, "", "",
        )

    def _send_execution(
        self, session: _Session, req_id: int, fill: OrderFilled, record: _OrderRecord,
        cum_qty: Decimal, avg_price: Decimal,
    ) -> None:
        inst = self._instruments.get(fill.symbol) or _Instrument.from_symbol(
            fill.symbol, Decimal("0.01"))
        self._send(
            session, Out.EXECUTION_DATA, req_id, record.order_id, *inst.fields(),
            fill.fill_id, ib_time(fill.ts_ns), self.account, inst.primary_exchange or
            inst.exchange, "BOT" if fill.side is Side.BUY else "SLD", fill.quantity, fill.price,
            record.perm_id, record.client_id, 0, cum_qty, avg_price, record.order_ref,
            "", "", "", 0,
        )

    def _send_commission(self, session: _Session, fill: OrderFilled) -> None:
        self._send(session, Out.COMMISSION_REPORT, fill.fill_id, 0, "USD", "", "", "")

    def _req_executions(self, session: _Session, fields: Fields) -> None:
        """Every execution of the account that matches the filter (client id 0: every
        client's), each as its latest correction; then the end marker, then the
        commission reports."""
        fields.req_id = fields.integer()
        client_id = fields.integer(default=0)
        account = fields.text()
        fields.text()  # time
        symbol, _sec_type, _exchange, side = (fields.text() for _ in range(4))
        totals: dict[str, tuple[Decimal, Decimal]] = {}
        sent = []
        for fill in self.engine.executions(self.account):
            record = self._record_for(fill.client_order_id, fill=fill)
            fill = self._corrected(fill)
            qty, notional = totals.get(record.client_order_id, (Decimal(0), Decimal(0)))
            qty, notional = qty + fill.quantity, notional + fill.quantity * fill.price
            totals[record.client_order_id] = (qty, notional)
            inst = self._instruments.get(fill.symbol)
            if (
                (client_id and record.client_id != client_id)
                or account not in ("", self.account)
                or (symbol and (inst is None or symbol != inst.ib_symbol))
                or (side and side != ("BUY" if fill.side is Side.BUY else "SELL"))
            ):
                continue
            self._send_execution(session, fields.req_id, fill, record, qty, notional / qty)
            sent.append(fill)
        self._send(session, Out.EXECUTION_DATA_END, fields.req_id)
        for fill in sent:
            self._send_commission(session, fill)

    def _corrected(self, fill: OrderFilled) -> OrderFilled:
        """The fill as its latest correction reports it (IB's execId and price)."""
        corrections = self._state.corrections.get(fill.fill_id)
        if not corrections:
            return fill
        latest = corrections[-1]
        return msgspec.structs.replace(fill, fill_id=latest.exec_id, price=latest.price)

    # ------------------------------------------------------------------ handlers: account

    def _position_of(self, symbol: str) -> tuple[Decimal, Decimal]:
        for position in self.engine.positions(self.account):
            if position.symbol == symbol:
                return position.quantity, position.average_price
        return Decimal(0), Decimal(0)

    def _positions(self) -> list[tuple[_Instrument, Decimal, Decimal]]:
        held = []
        for position in self.engine.positions(self.account):
            inst = self._instruments.get(position.symbol)
            if inst is not None and position.quantity != 0:
                held.append((inst, position.quantity, position.average_price))
        return held

    def _send_position(
        self, session: _Session, inst: _Instrument, quantity: Decimal, average: Decimal
    ) -> None:
        self._send(session, Out.POSITION_DATA, self.account, *inst.fields(), quantity, average)

    def _send_portfolio(
        self, session: _Session, inst: _Instrument, quantity: Decimal, average: Decimal
    ) -> None:
        quote = self.engine.quote(inst.symbol)
        price = quote.mid if quote is not None else average
        self._send(
            session, Out.PORTFOLIO_VALUE, inst.con_id, inst.ib_symbol, inst.sec_type, "", "0",
            "", "", inst.primary_exchange, inst.currency, inst.local_symbol, inst.local_symbol,
            quantity, price, quantity * price, average, (price - average) * quantity,
            self.engine.realized_pnl(self.account).get(inst.symbol, Decimal(0)), self.account,
        )

    def _req_positions(self, session: _Session, fields: Fields) -> None:
        session.positions_subscribed = True
        for inst, quantity, average in self._positions():
            self._send_position(session, inst, quantity, average)
        self._send(session, Out.POSITION_END)

    def _cancel_positions(self, session: _Session, fields: Fields) -> None:
        session.positions_subscribed = False

    def _req_positions_multi(self, session: _Session, fields: Fields) -> None:
        fields.req_id = fields.integer()
        account, model_code = fields.text(), fields.text()
        if account in ("", self.account):
            for inst, quantity, average in self._positions():
                self._send(session, Out.POSITION_MULTI, fields.req_id, self.account,
                           *inst.fields(), quantity, average, model_code)
        self._send(session, Out.POSITION_MULTI_END, fields.req_id)

    def _account_figures(self) -> AccountFigures:
        """The account now. The cash flow of executions is summed once and then only for
        the executions since (on the loop, like every account message)."""
        executions = self.engine.executions(self.account)
        start = self._cash_counted or 0
        for fill in map(self._corrected, executions[start:]):
            self._cash_flow += -fill.quantity * fill.price if fill.side is Side.BUY \
                else fill.quantity * fill.price
        self._cash_counted = len(executions)
        holdings = []
        for position in self.engine.positions(self.account):
            quote = self.engine.quote(position.symbol)
            mark = quote.mid if quote is not None and quote.bid > 0 else position.average_price
            holdings.append(Holding(position.quantity, position.average_price, mark))
        realized = sum(self.engine.realized_pnl(self.account).values(), Decimal(0))
        return account_figures(self.behaviour.initial_cash + self._cash_flow, [], holdings,
                               realized)

    def _account_values(self) -> list[tuple[str, str, str]]:
        return [("AccountCode", self.account, ""), ("AccountReady", "true", ""),
                ("Currency", "USD", "USD"), *self._account_figures().updates()]

    def _send_account_values(self, session: _Session) -> None:
        for key, value, currency in self._account_values():
            self._send(session, Out.ACCT_VALUE, key, value, currency, self.account)
        self._send(session, Out.ACCT_UPDATE_TIME, datetime.now(UTC).strftime("%H:%M"))

    def _req_account_updates(self, session: _Session, fields: Fields) -> None:
        subscribe = fields.flag()
        account = fields.text()
        if account not in ("", self.account):
            self._error(session, NO_REQUEST, ErrorCode.REQUEST_REFUSED,
                        f"Error validating request: unknown account {account}")
            return
        session.account_subscribed = subscribe
        if not subscribe:
            return
        for key, value, currency in self._account_values():
            self._send(session, Out.ACCT_VALUE, key, value, currency, self.account)
        for inst, quantity, average in self._positions():
            self._send_portfolio(session, inst, quantity, average)
        self._send(session, Out.ACCT_UPDATE_TIME, datetime.now(UTC).strftime("%H:%M"))
        self._send(session, Out.ACCT_DOWNLOAD_END, self.account)

    def _req_account_updates_multi(self, session: _Session, fields: Fields) -> None:
        fields.req_id = fields.integer()
        account, model_code = fields.text(), fields.text()
        if account in ("", self.account):
            for key, value, currency in self._account_values():
                self._send(session, Out.ACCOUNT_UPDATE_MULTI, fields.req_id, self.account,
                           model_code, key, value, currency)
        self._send(session, Out.ACCOUNT_UPDATE_MULTI_END, fields.req_id)

    def _req_account_summary(self, session: _Session, fields: Fields) -> None:
        """The requested tags (``$LEDGER``, ``$LEDGER:USD`` and ``$LEDGER:ALL`` add the
        ledger), then the end marker; sent again after executions until cancelled."""
        fields.req_id = fields.integer()
        group, tags_text = fields.text(), fields.text()
        if group != "All":
            self._error(session, fields.req_id, ErrorCode.REQUEST_REFUSED,
                        f"Error validating request: unknown account group {group!r} "
                        "(this venue knows 'All')")
            return
        tags = frozenset(tag.strip() for tag in tags_text.split(",") if tag.strip())
        session.account_summaries[fields.req_id] = tags
        self._send_account_summary(session, fields.req_id, tags)
        self._send(session, Out.ACCOUNT_SUMMARY_END, fields.req_id)

    def _cancel_account_summary(self, session: _Session, fields: Fields) -> None:
        session.account_summaries.pop(fields.integer(), None)

    def _send_account_summary(self, session: _Session, req_id: int, tags: frozenset[str]) -> None:
        figures = self._account_figures()
        for tag, (value, currency) in figures.summary().items():
            if tag in tags:
                self._send(session, Out.ACCOUNT_SUMMARY, req_id, self.account, tag, value,
                           currency)
        if tags & {"$LEDGER", "$LEDGER:ALL", "$LEDGER:USD"}:
            for tag, value in figures.ledger().items():
                self._send(session, Out.ACCOUNT_SUMMARY, req_id, self.account, tag, value, "USD")

    def _send_account_summaries(self, session: _Session) -> None:
        for req_id, tags in list(session.account_summaries.items()):
            self._send_account_summary(session, req_id, tags)


def _day_start_ns(ts_ns: int) -> int:
    """The start of the UTC day containing ``ts_ns``."""
    day = 86_400 * 10**9
    return ts_ns - ts_ns % day


def _error_schedule(text: str) -> list[tuple[int, float]]:
    """``CODE@SECONDS,...`` -> [(code, seconds)]."""
    schedule = []
    for item in text.split(","):
        code, sep, delay = item.strip().partition("@")
        try:
            entry = (int(code), float(delay))
        except ValueError:
            entry = (0, -1.0)
        if not sep or entry[0] not in _CONNECTIVITY_TEXTS or not 0 <= entry[1] < 86_400:
            raise argparse.ArgumentTypeError(
                f"expected CODE@SECONDS with CODE in {sorted(_CONNECTIVITY_TEXTS)}, got {item!r}")
        schedule.append(entry)
    return schedule


def main(argv: Sequence[str] | None = None) -> int:
    """``tradeguard venue tws``: run an engine and a fake TWS until SIGTERM or SIGINT."""
    from venues.engine import EngineConfig, VenueEngine
    from venues.process import serve_until_signalled

    parser = argparse.ArgumentParser(prog="tradeguard venue tws", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--port", type=int, default=7497, help="TCP port (0: any free port)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="directory for engine.json and tws.json (kept across restarts)")
    parser.add_argument("--account", default="DU000001", help="the IB account served")
    parser.add_argument("--venue-name", default="tws", help="the engine's venue name")
    parser.add_argument("--seed", type=int, default=7, help="price path seed")
    parser.add_argument("--step-interval", type=float, default=0.05,
                        help="seconds between market steps")
    parser.add_argument("--annual-volatility", type=float, default=0.25,
                        help="yearly volatility of every price (0.25: a large US stock); each "
                             "step moves by it scaled to the step interval")
    parser.add_argument("--coalesce-quotes", action="store_true",
                        help="write a quote's bid and ask ticks in one write (default: every tick "
                             "on its own, bid side first, as TWS does)")
    parser.add_argument("--split-quotes", action="store_true",
                        help="every tick on its own write (the default; kept for older scripts)")
    parser.add_argument("--quote-split-delay", type=float, default=0.0, metavar="SECONDS",
                        help="with split ticks: the ask side this long after the bid side")
    parser.add_argument("--drop-order-rate", type=float, default=0.0, metavar="P",
                        help="probability that a placeOrder is lost in flight")
    parser.add_argument("--ignore-global-cancel", action="store_true",
                        help="read reqGlobalCancel and do nothing")
    parser.add_argument("--ignore-completed-orders", action="store_true",
                        help="read reqCompletedOrders for API orders only (apiOnly) and never "
                             "answer")
    parser.add_argument("--master-client-id", type=int, default=None,
                        help="client id that also receives every other order's events")
    parser.add_argument("--cancel-after", type=float, default=0.0, metavar="SECONDS",
                        help="the venue cancels every order still working this long after it "
                             "was accepted (0: never)")
    parser.add_argument("--silent-cancels", action="store_true",
                        help="the venue's own cancels (--cancel-after) are told to no client")
    parser.add_argument("--initial-cash", type=Decimal, default=Decimal(1_000_000),
                        help="the account's cash before its first execution (USD)")
    parser.add_argument("--inject-errors", type=_error_schedule, default=[],
                        metavar="CODE@SECONDS,...",
                        help="send connectivity codes (1100, 1101, 1102, 2110) to every client "
                             "at these times after start, e.g. 1100@30,1102@45")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        behaviour = TwsBehaviour(
            coalesce_quotes=args.coalesce_quotes and not args.split_quotes,
            quote_split_delay_s=args.quote_split_delay,
            drop_order_rate=args.drop_order_rate, ignore_global_cancel=args.ignore_global_cancel,
            ignore_completed_orders=args.ignore_completed_orders,
            master_client_id=args.master_client_id, initial_cash=args.initial_cash,
            cancel_after_s=args.cancel_after, silent_cancels=args.silent_cancels)
        engine_config = EngineConfig(
            seed=args.seed,
            volatility_bps=step_volatility_bps(args.annual_volatility, args.step_interval))
    except ValueError as exc:
        parser.error(str(exc))
    engine_path = args.state_dir / "engine.json" if args.state_dir else None
    tws_path = args.state_dir / "tws.json" if args.state_dir else None
    engine = VenueEngine(args.venue_name, engine_config)
    if engine_path is not None:
        engine.load(engine_path)
    venue = TwsVenue(engine, args.host, args.port, args.account, state_path=tws_path,
                     behaviour=behaviour)

    def start_front() -> str:
        port = venue.start()
        venue.schedule_errors(args.inject_errors)
        return f"tws venue listening on {args.host}:{port}"

    return serve_until_signalled(engine, interval_s=args.step_interval, state_path=engine_path,
                                 start_front=start_front, stop_front=venue.stop)


if __name__ == "__main__":
    sys.exit(main())
