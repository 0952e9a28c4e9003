"""The FIX front of the simulated venue: a quickfix acceptor over one ``VenueEngine``.

``FixVenue`` accepts one FIX session (``sender_comp_id`` -> ``target_comp_id``) on
loopback and trades for one engine account (the counterparty's comp id by default). It
speaks FIX 4.4 by default, and FIX 4.2 or FIX 5.0 SP2 (``FIXT.1.1``, the 4.4 bodies plus
the few fields 5.0 SP2 requires) by configuration; docs/fix.md describes the subset.

- Session level (Logon, Logout, Heartbeat, TestRequest, ResendRequest, SequenceReset)
  is quickfix's. Store and log files live under ``state_dir``, so sequence numbers and
  sent messages survive a venue restart and a reconnecting client gets what it missed by
  an ordinary ResendRequest. Market data is never resent (gap fill instead).
- MarketDataRequest (V) -> MarketDataSnapshotFullRefresh (W) per symbol, then one
  MarketDataIncrementalRefresh (X) per engine step for the subscribed symbols.
- NewOrderSingle (D) -> ExecutionReport (8): New, Trade (4.4 ExecType F; 4.2 Partial
  fill / Fill) with LastQty, LastPx, LeavesQty, CumQty and AvgPx, Rejected with Text and
  OrdRejReason, Canceled.
- OrderCancelRequest (F) -> 8 Canceled, or OrderCancelReject (9).
- OrderMassCancelRequest (q) -> 8 Canceled per order, then OrderMassCancelReport (r).
- RequestForPositions (AN) -> RequestForPositionsAck (AO), then one PositionReport (AP)
  per non-flat position.
- OrderStatusRequest (H) -> one 8 with ExecType I (order status): OrdStatus, CumQty,
  LeavesQty and AvgPx of the order, working or done, echoing OrdStatusReqID; an order
  the venue never accepted is answered OrdStatus Rejected with OrdRejReason 5 (unknown).
- OrderMassStatusRequest (AF) -> one 8 with ExecType I (order status) per working order;
  with ``replay_trades`` (not standard; off by default) also every execution of the
  account today (UTC) replayed as an 8 Trade with PossResend=Y.
- Trade busts and corrections made at the engine -> 8 with ExecType H (Trade Cancel) or
  G (Trade Correct), ExecRefID naming the original ExecID, CumQty/AvgPx as they now stand.
- Fills for orders the session never sent (``VenueEngine.external_fill``) -> 8 Trade with
  the venue-made ClOrdID.

Misbehaviour switches (``FixBehaviour``; ``tradeguard venue fix --help``): standard
recovery only (no trade replay on AF), refused or unanswered mass cancels, orders answered
by a session-level Reject (35=3) or a BusinessMessageReject (35=j), orders dropped in
flight, trades busted or corrected after they were reported, fills for orders the client
never sent, and executions sent while the session was down gap-filled instead of resent.

FIX 4.2 has no AN/AO/AP, q/r or AF. On 4.2 the venue uses the same messages with
user-defined message types (``U`` + the 4.4 type: UAN, UAO, UAP, Uq, Ur, UAF) and a FIX
4.2 data dictionary extended with them, generated from quickfix's FIX42.xml and
FIX44.xml into ``state_dir`` (both defined in ``messages.fix_spec``, shared with the
connector).

The acceptor listens on 127.0.0.1 only, and the session admits peers from 127.0.0.1 only
(``AllowedRemoteAddresses``: any other peer is dropped at Logon). quickfix 1.16 has no
setting for the listening address (later builds have ``SocketAcceptHost``, used when
present) and binds every interface; with it the venue lets quickfix listen on a spare
port, then puts a socket bound to 127.0.0.1 on the public port under quickfix's listening
descriptor (``_listen_on_host``), so nothing of the venue listens on another interface.

Threads: quickfix's threaded acceptor calls the application from its connection thread
(its single-threaded SocketAcceptor can crash in ``stop()``); engine events arrive on the
thread that drove the engine (the connection thread for requests, the engine runner for
steps). Messages are sent from the engine listener, in engine order. No callback lets a
Python exception escape into quickfix (that would end the process).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import socket
import stat
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import quickfix as fix
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
    TimeInForce,
)
from messages.fix_spec import (
    BEGIN_STRINGS,
    EXTENDED_42_TYPES,
    FIX42,
    FIX44,
    FIXT11,
    GTD,
    ORD_TYPE_CODES,
    ORD_TYPES,
    SIDE_CODES,
    SIDES,
    TIF_CODES,
    TIFS,
    Tag,
    data_dictionary_settings,
    format_decimal,
    utc_timestamp,
)

if TYPE_CHECKING:
    from messages import OrderEvent
    from venues.engine import TradeAmended, VenueEngine, WorkingOrder

__all__ = [
    "FIX42",
    "FIX44",
    "FIXT11",
    "MASS_CANCEL_MODES",
    "FixBehaviour",
    "FixVenue",
    "free_port",
    "main",
    "spec_dir",
]

_ZERO = Decimal(0)
_DAY_NS = 86_400 * 1_000_000_000

# FIX tags the shared table does not name.
_EXEC_REF_ID = 19
_BUSINESS_REJECT_REF_ID = 379
_ORD_STATUS_REQ_ID = 790

MASS_CANCEL_MODES = frozenset({"accept", "refuse", "ignore"})
"""``FixBehaviour.mass_cancel``: carry out, refuse (35=r MassCancelResponse=0), or never answer."""


def _rate(field: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{field}: must be within [0, 1], got {value}")


class FixBehaviour(msgspec.Struct, frozen=True, kw_only=True):
    """How the FIX venue behaves where real venues differ from a kind simulator.

    The defaults are a standard venue (no trade replay on AF): a switch changes one
    thing. Rates are probabilities per order (per trade for busts and corrections, per engine step for
    fills from elsewhere), drawn from generators seeded by ``seed``.
    """

    replay_trades: bool = False
    """Answer AF with today's executions replayed after the order statuses. Not standard:
    a standard venue sends order statuses only, and missed fills are recovered by the
    session's resend and by OrderStatusRequest (35=H). ``False`` (the default) is standard
    recovery."""
    resend_fills: bool = True
    """Resend execution reports on a ResendRequest (standard). ``False``: they are
    gap-filled, so fills sent while the session was down never reach the client."""
    mass_cancel: str = "accept"
    """``accept`` (cancel, then 35=r), ``refuse`` (35=r MassCancelResponse=0, nothing
    cancelled) or ``ignore`` (no answer, nothing cancelled)."""
    session_reject_rate: float = 0.0
    """Share of orders answered by a session-level Reject (35=3, RefMsgType=D)."""
    business_reject_rate: float = 0.0
    """Share of orders answered by a BusinessMessageReject (35=j, BusinessRejectRefID=ClOrdID)."""
    drop_rate: float = 0.0
    """Share of orders dropped in flight: never acknowledged, never working."""
    answer_status: bool = True
    """Answer OrderStatusRequest (35=H). ``False``: every H is read and never answered."""
    bust_rate: float = 0.0
    """Share of trades busted (ExecType=H) at the engine step after they were reported."""
    correct_rate: float = 0.0
    """Share of trades corrected (ExecType=G) one tick against the client at the next step."""
    foreign_fill_rate: float = 0.0
    """Chance per engine step of a fill for an order the client never sent."""
    seed: int = 7
    """Seed of every draw above."""

    def __post_init__(self) -> None:
        if self.mass_cancel not in MASS_CANCEL_MODES:
            raise ValueError(
                f"mass_cancel: expected one of {sorted(MASS_CANCEL_MODES)}, got {self.mass_cancel!r}")
        for name in ("session_reject_rate", "business_reject_rate", "drop_rate", "bust_rate",
                     "correct_rate", "foreign_fill_rate"):
            _rate(name, getattr(self, name))

    @classmethod
    def standard(cls, **changes: object) -> FixBehaviour:
        """A venue that recovers by the standard only (no trade replay), plus ``changes``."""
        return msgspec.structs.replace(cls(replay_trades=False), **changes)


_log = logger.bind(channel="main", component="fix_venue")


def spec_dir() -> Path:
    """The directory holding the FIX data dictionaries the quickfix wheel installs."""
    candidates = (
        Path(sysconfig.get_path("data")) / "share" / "quickfix",
        Path(sys.prefix) / "share" / "quickfix",
        Path(fix.__file__).resolve().parent / "spec",
    )
    for candidate in candidates:
        if (candidate / "FIX44.xml").is_file():
            return candidate
    raise FileNotFoundError(f"quickfix data dictionaries not found in {candidates}")


def dictionary_settings(begin_string: str, directory: Path) -> dict[str, str]:
    """quickfix settings that select (and for 4.2 generate) the data dictionaries."""
    return data_dictionary_settings(begin_string, spec_dir(), directory)


_TOO_LATE_TO_ENTER = "4"
"""OrdRejReason (103): too late to enter."""


def expired_on_arrival(message: fix.Message, now_ns: int) -> str:
    """Why a NewOrderSingle with TimeInForce GTD is refused on arrival at ``now_ns`` (its
    ExpireTime has passed), or "" when it may enter (not GTD, or still good). A GTD order
    without ExpireTime is invalid (``BadRequest``): this venue takes no ExpireDate."""
    expire_ns = expire_time_of(message)
    if expire_ns is None or now_ns < expire_ns:
        return ""
    late_ms = (now_ns - expire_ns) // 1_000_000
    return f"ExpireTime {_get(message, Tag.EXPIRE_TIME)} passed {late_ms} ms before the order arrived"


def expire_time_of(message: fix.Message) -> int | None:
    """The ExpireTime (126) of a GTD order in wall-clock nanoseconds; None when the order is
    not GTD. ``BadRequest`` for a GTD order without a valid one."""
    if _get(message, Tag.TIME_IN_FORCE) != GTD:
        return None
    expire = _get(message, Tag.EXPIRE_TIME)
    if not expire:
        raise BadRequest("ExpireTime (126) is required with TimeInForce GTD")
    stamp, _, fraction = expire.partition(".")
    try:
        moment = datetime.strptime(stamp, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"ExpireTime {expire!r} is not a UTCTimestamp") from None
    if not fraction.isdigit() and fraction:
        raise BadRequest(f"ExpireTime {expire!r} is not a UTCTimestamp")
    return int(moment.timestamp()) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)


def _listening_descriptor(port: int) -> int | None:
    """The descriptor of this process's TCP socket listening on ``port``, if any."""
    for name in os.listdir("/proc/self/fd"):
        try:
            descriptor = int(name)
            if not stat.S_ISSOCK(os.fstat(descriptor).st_mode):
                continue
            with socket.socket(fileno=os.dup(descriptor)) as probe:
                listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                address = probe.getsockname()
        except (OSError, ValueError):
            continue  # closed meanwhile, or not an inet socket
        if listening and isinstance(address, tuple) and address[1] == port:
            return descriptor
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (quickfix cannot listen on 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---- small FIX helpers -----------------------------------------------------------------------


def _get(fields: fix.FieldMap, tag: int) -> str | None:
    """The value of ``tag`` or ``None`` when it is absent."""
    return fields.getField(tag) if fields.isSetField(tag) else None


def _groups(message: fix.FieldMap, count_tag: int, delimiter: int) -> list[fix.Group]:
    """Every instance of a repeating group."""
    count = int(_get(message, count_tag) or 0)
    found = []
    for index in range(1, count + 1):
        group = fix.Group(count_tag, delimiter)
        message.getGroup(index, group)
        found.append(group)
    return found


def _set(fields: fix.FieldMap, values: Iterable[tuple[int, str | None]]) -> None:
    """Set every ``(tag, value)`` whose value is not ``None``."""
    for tag, value in values:
        if value is not None:
            fields.setField(tag, value)


_PENDING_NEW = "A"
_NEW = "0"
_PARTIAL = "1"
_FILLED = "2"
_CANCELED = "4"
_REJECTED = "8"
_EXPIRED = "C"


@dataclass
class _Order:
    """What the front remembers of one live order, for execution report fields."""

    order: SubmitOrder
    venue_order_id: str = ""
    status: str = _PENDING_NEW
    cum: Decimal = _ZERO
    notional: Decimal = _ZERO
    expire_ns: int | None = None
    """ExpireTime of a GTD order (wall-clock nanoseconds); None for any other."""
    expiring: bool = False
    """Its ExpireTime has passed and the engine was asked to take it off the book."""

    @property
    def avg_px(self) -> Decimal:
        """Average fill price so far."""
        return self.notional / self.cum if self.cum else _ZERO

    @property
    def leaves(self) -> Decimal:
        """Quantity still working (zero once done)."""
        if self.status in (_FILLED, _CANCELED, _REJECTED, _EXPIRED):
            return _ZERO
        return self.order.quantity - self.cum


class BadRequest(ValueError):
    """A request that passed quickfix's validation but that the venue cannot act on."""


class _Application(fix.Application):  # type: ignore[misc]
    """quickfix callbacks; each one hands over to the venue and never raises."""

    def __init__(self, venue: FixVenue) -> None:
        super().__init__()
        self.venue = venue

    def onCreate(self, session_id: fix.SessionID) -> None:
        """A session object exists."""

    def onLogon(self, session_id: fix.SessionID) -> None:
        """The counterparty logged on."""
        self.venue._guard("onLogon", self.venue._on_logon)

    def onLogout(self, session_id: fix.SessionID) -> None:
        """The session ended (logout or disconnect)."""
        self.venue._guard("onLogout", self.venue._on_logout)

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Outgoing session message: nothing to add."""

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Incoming session message: quickfix handles it."""

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Outgoing application message; market data is gap-filled instead of resent."""
        try:
            resend = _get(message.getHeader(), Tag.POSS_DUP_FLAG) == "Y"
            msg_type = message.getHeader().getField(Tag.MSG_TYPE)
            stale = resend and (
                msg_type in ("W", "X")
                or (msg_type == "8" and not self.venue.behaviour.resend_fills)
            )
        except Exception:  # never let an exception reach quickfix
            _log.exception("fix venue: toApp failed")
            return
        if stale:
            raise fix.DoNotSend()

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Incoming application message: dispatch it."""
        self.venue._guard("fromApp", self.venue._on_message, message)


class FixVenue:
    """Serve one ``VenueEngine`` to one FIX counterparty through a quickfix acceptor."""

    def __init__(
        self,
        engine: VenueEngine,
        port: int,
        state_dir: Path,
        begin_string: str = FIX44,
        sender_comp_id: str = "VENUE",
        target_comp_id: str = "TRADEGUARD",
        *,
        account: str | None = None,
        behaviour: FixBehaviour | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """Prepare the acceptor on ``host``:``port``; nothing listens before ``start()``.

        ``account`` is the engine account the session trades for (``target_comp_id`` by
        default). quickfix's store and log files go under ``state_dir``. ``behaviour``
        switches on the ways real venues differ from a kind one (``FixBehaviour``).
        ``host`` must be a loopback address: the simulator is never reachable from outside.
        """
        if host != "127.0.0.1":
            raise ValueError(f"host: the simulated venue listens on 127.0.0.1 only, got {host!r}")
        if begin_string not in BEGIN_STRINGS:
            raise ValueError(
                f"begin_string: expected one of {sorted(BEGIN_STRINGS)}, got {begin_string!r}"
            )
        if not 0 < port < 65536:
            raise ValueError(f"port: must be within 1..65535, got {port}")
        self.engine = engine
        self.port = port
        self.state_dir = Path(state_dir)
        self.begin_string = begin_string
        self.sender_comp_id = sender_comp_id
        self.target_comp_id = target_comp_id
        self.account = account or target_comp_id
        self.host = host
        self.behaviour = behaviour if behaviour is not None else FixBehaviour()
        seed = self.behaviour.seed
        self._draws = {
            name: random.Random(f"{seed}:{name}")
            for name in ("session_reject", "business_reject", "drop", "bust", "correct", "foreign")
        }
        self._amendments_due: list[tuple[str, str]] = []  # (bust | correct, fill_id)
        self.dropped: list[str] = []
        """ClOrdIDs of the orders dropped in flight (``drop_rate``), oldest first."""
        self.misbehaviours: dict[str, int] = {}
        """How often each switch acted: session_reject, business_reject, drop, bust, ..."""
        self.session_id = fix.SessionID(begin_string, sender_comp_id, target_comp_id)
        self._legacy = begin_string == FIX42
        self._fixt = begin_string == FIXT11  # 5.0 SP2 requires a few more fields
        self._lock = threading.Lock()
        self._orders: dict[str, _Order] = {}
        self._cancel_requests: dict[str, str] = {}  # original ClOrdID -> cancel ClOrdID
        self._market_data: dict[str, str] = {}  # symbol -> MDReqID
        self._logged_on = threading.Event()
        self._logged_out = threading.Event()
        self._ids = itertools.count(1)
        self._acceptor: fix.ThreadedSocketAcceptor | None = None
        self._accept_port = port
        self._application: _Application | None = None
        self.callback_errors = 0
        """Exceptions caught in quickfix callbacks (logged; never raised into quickfix)."""

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Listen, and subscribe to the engine's quotes and order events."""
        if self._acceptor is not None:
            raise RuntimeError("fix venue: already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        native_host = hasattr(fix, "SOCKET_ACCEPT_HOST")  # quickfix builds after 1.16
        self._accept_port = self.port if native_host else free_port()
        settings = self._settings()
        self._application = _Application(self)
        acceptor = fix.ThreadedSocketAcceptor(
            self._application,
            fix.FileStoreFactory(settings),
            settings,
            fix.FileLogFactory(settings),
        )
        self._restore_orders()
        self.engine.add_order_listener(self._on_order_event)
        self.engine.add_quote_listener(self._on_quotes)
        self.engine.add_amendment_listener(self._on_amendment)
        try:
            acceptor.start()
            if not native_host:
                try:
                    self._listen_on_host()
                except Exception:
                    acceptor.stop(True)
                    raise
        except Exception:
            self.engine.remove_order_listener(self._on_order_event)
            self.engine.remove_quote_listener(self._on_quotes)
            self.engine.remove_amendment_listener(self._on_amendment)
            raise
        self._acceptor = acceptor
        _log.info(f"fix venue {self.engine.venue}: {self.session_id} listening on {self.port}")

    def stop(self, *, graceful: bool = True, timeout_s: float = 2.0) -> None:
        """Stop listening and drop the session; idempotent.

        ``graceful`` logs the counterparty out first (quickfix sends the Logout on its next
        one-second tick) and waits up to ``timeout_s`` for the session to end; otherwise
        the connection is just dropped, as when a venue crashes.
        """
        acceptor = self._acceptor
        if acceptor is None:
            return
        # Both calls take the engine lock, so no listener call is in flight after them.
        self.engine.remove_order_listener(self._on_order_event)
        self.engine.remove_quote_listener(self._on_quotes)
        self.engine.remove_amendment_listener(self._on_amendment)
        session = fix.Session.lookupSession(self.session_id)
        if session is not None and self._logged_on.is_set():
            if graceful:
                session.logout("venue stopping")
                self._logged_out.wait(timeout_s)
            if self._logged_on.is_set():
                session.disconnect()
                self._logged_out.wait(timeout_s)
        # The threaded acceptor: SocketAcceptor.stop() races its own thread (both close
        # and free the listening server), which crashes now and then in quickfix 1.16.
        acceptor.stop(True)
        self._acceptor = None
        self._application = None
        self._logged_on.clear()
        with self._lock:
            self._market_data.clear()
        _log.info(f"fix venue {self.engine.venue}: stopped")

    def _listen_on_host(self) -> None:
        """Make quickfix 1.16's acceptor listen on ``host``:``port`` instead of every interface.

        quickfix listens on 0.0.0.0 at a spare port, its accept thread holding the listening
        descriptor. A socket bound to ``host``:``port`` is put under that same descriptor
        number (``dup2``), so quickfix's next ``accept`` takes connections from it; one
        connection to the spare port then releases the accept already waiting on the old
        socket, which closes it and frees the spare port. Raises ``OSError`` when quickfix's
        listening socket cannot be found or the address cannot be bound.
        """
        spare = self._accept_port
        descriptor = _listening_descriptor(spare)
        if descriptor is None:
            raise OSError(f"fix venue: quickfix's listening socket on port {spare} not found")
        public = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            public.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            public.bind((self.host, self.port))
            public.listen(128)
            os.dup2(public.fileno(), descriptor, inheritable=False)
        finally:
            public.close()  # quickfix's descriptor keeps the socket open
        try:  # an accept that was already waiting lets go of the old socket
            with socket.create_connection(("127.0.0.1", spare), timeout=2.0):
                pass
        except OSError:
            pass  # nothing was waiting on it: the old socket is already closed

    def logged_on(self) -> bool:
        """True while the counterparty is logged on."""
        return self._logged_on.is_set()

    def wait_logged_on(self, timeout_s: float) -> bool:
        """Wait until the counterparty is logged on; False on timeout."""
        return self._logged_on.wait(timeout_s)

    def send(self, message: fix.Message) -> bool:
        """Send ``message`` on the session as it is (tests use it to send faulty messages)."""
        try:
            return bool(fix.Session.sendToTarget(message, self.session_id))
        except fix.SessionNotFound:
            return False

    def _settings(self) -> fix.SessionSettings:
        values = {
            "ConnectionType": "acceptor",
            "SocketAcceptHost": self.host,
            "SocketAcceptPort": str(self._accept_port),
            "SocketReuseAddress": "Y",
            "SocketNodelay": "Y",
            "AllowedRemoteAddresses": "127.0.0.1",
            "FileStorePath": str(self.state_dir / "store"),
            "FileLogPath": str(self.state_dir / "log"),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            "NonStopSession": "Y",
            "ResetOnLogon": "N",
            "ResetOnLogout": "N",
            "ResetOnDisconnect": "N",
            "PersistMessages": "Y",
            **dictionary_settings(self.begin_string, self.state_dir),
        }
        defaults = fix.Dictionary()
        for key, value in values.items():
            defaults.setString(key, value)
        settings = fix.SessionSettings()
        settings.set(defaults)
        settings.set(self.session_id, fix.Dictionary())
        return settings

    # ---- quickfix callbacks (quickfix thread) ----------------------------------------------

    def _guard(self, where: str, handler: Callable[..., None], *args: object) -> None:
        """Run a callback body; log and count any exception instead of raising it."""
        try:
            handler(*args)
        except BaseException:  # an exception escaping into quickfix ends the process
            self.callback_errors += 1
            _log.exception(f"fix venue: {where} failed")

    def _on_logon(self) -> None:
        self._logged_out.clear()
        self._logged_on.set()
        _log.info(f"fix venue {self.engine.venue}: {self.target_comp_id} logged on")

    def _on_logout(self) -> None:
        self._logged_on.clear()
        with self._lock:
            self._market_data.clear()
        self._logged_out.set()
        _log.info(f"fix venue {self.engine.venue}: {self.target_comp_id} logged out")

    def _on_message(self, message: fix.Message) -> None:
        wire_type = message.getHeader().getField(Tag.MSG_TYPE)
        msg_type = self._app_type(wire_type)
        handler = {
            "V": self._on_market_data_request,
            "D": self._on_new_order,
            "F": self._on_cancel_request,
            "q": self._on_mass_cancel,
            "AN": self._on_position_request,
            "AF": self._on_mass_status,
            "H": self._on_status_request,
        }.get(msg_type)
        try:
            if handler is None:
                raise BadRequest(f"unsupported message type {wire_type}")
            handler(message)
        except (BadRequest, InvalidOperation, ValueError, KeyError, fix.FieldNotFound) as exc:
            self._business_reject(message, wire_type, str(exc))

    # ---- message types ---------------------------------------------------------------------

    def _wire_type(self, msg_type: str) -> str:
        return EXTENDED_42_TYPES.get(msg_type, msg_type) if self._legacy else msg_type

    def _app_type(self, wire_type: str) -> str:
        if self._legacy:
            for app_type, legacy in EXTENDED_42_TYPES.items():
                if legacy == wire_type:
                    return app_type
        return wire_type

    def _new(self, msg_type: str) -> fix.Message:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, self._wire_type(msg_type))
        return message

    def _send(self, message: fix.Message) -> None:
        try:
            fix.Session.sendToTarget(message, self.session_id)
        except fix.SessionNotFound:
            _log.warning(f"fix venue {self.engine.venue}: session gone, message dropped")

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{time.time_ns():x}-{next(self._ids)}"

    def _business_reject(self, message: fix.Message, wire_type: str, text: str, *,
                         ref_id: str | None = None, reason: str | None = None) -> None:
        _log.warning(f"fix venue {self.engine.venue}: rejected {wire_type}: {text}")
        reject = self._new("j")
        _set(reject, (
            (Tag.REF_SEQ_NUM, _get(message.getHeader(), Tag.MSG_SEQ_NUM)),
            (Tag.REF_MSG_TYPE, wire_type),
            (_BUSINESS_REJECT_REF_ID, ref_id),
            (Tag.BUSINESS_REJECT_REASON,
             reason or ("3" if text.startswith("unsupported") else "0")),
            (Tag.TEXT, text[:200]),
        ))  # fmt: skip
        self._send(reject)

    def _session_reject(self, message: fix.Message, wire_type: str, text: str) -> None:
        """A session-level Reject (35=3) of an application message."""
        reject = fix.Message()
        reject.getHeader().setField(Tag.MSG_TYPE, "3")
        _set(reject, (
            (Tag.REF_SEQ_NUM, _get(message.getHeader(), Tag.MSG_SEQ_NUM) or "0"),
            (Tag.REF_MSG_TYPE, wire_type),
            (Tag.SESSION_REJECT_REASON, "99"),  # Other
            (Tag.TEXT, text[:200]),
        ))  # fmt: skip
        self._send(reject)

    def _draw(self, name: str, rate: float) -> bool:
        """One draw of switch ``name``; counted when it acts."""
        if rate <= 0.0 or self._draws[name].random() >= rate:
            return False
        self.misbehaviours[name] = self.misbehaviours.get(name, 0) + 1
        return True

    # ---- misbehaviour on demand (tests and demos) -------------------------------------------

    def bust(self, fill_id: str) -> TradeAmended:
        """Bust one of the session's trades now: the client gets ExecType=H."""
        return self.engine.bust(self.account, fill_id)

    def correct(self, fill_id: str, *, price: Decimal | None = None,
                quantity: Decimal | None = None) -> TradeAmended:
        """Correct one of the session's trades now: the client gets ExecType=G."""
        return self.engine.correct(self.account, fill_id, price=price, quantity=quantity)

    def foreign_fill(self, symbol: str, side: Side, quantity: Decimal,
                     price: Decimal | None = None) -> OrderFilled:
        """A fill on the session's account for an order the client never sent."""
        return self.engine.external_fill(self.account, symbol, side, quantity, price)

    # ---- market data -----------------------------------------------------------------------

    def _on_market_data_request(self, message: fix.Message) -> None:
        req_id = message.getField(Tag.MD_REQ_ID)
        kind = message.getField(Tag.SUBSCRIPTION_REQUEST_TYPE)
        symbols = [g.getField(Tag.SYMBOL) for g in _groups(message, Tag.NO_RELATED_SYM, Tag.SYMBOL)]
        unknown = [s for s in symbols if s not in self.engine.symbols]
        if unknown:
            reject = self._new("Y")
            _set(reject, (
                (Tag.MD_REQ_ID, req_id),
                (Tag.MD_REQ_REJ_REASON, "0"),
                (Tag.TEXT, f"unknown symbol {', '.join(unknown)}"),
            ))  # fmt: skip
            self._send(reject)
            return
        if kind == "2":
            with self._lock:
                for symbol in symbols:
                    if self._market_data.get(symbol) == req_id:
                        del self._market_data[symbol]
            return
        if kind == "1":
            with self._lock:
                for symbol in symbols:
                    self._market_data[symbol] = req_id
        for symbol in symbols:
            quote = self.engine.quote(symbol)
            if quote is not None:
                self._send(self._snapshot(req_id, quote))

    def _snapshot(self, req_id: str, quote: Quote) -> fix.Message:
        message = self._new("W")
        _set(message, (
            (Tag.MD_REQ_ID, req_id),
            (Tag.SYMBOL, quote.symbol),
            (Tag.LAST_UPDATE_TIME, utc_timestamp(quote.ts_ns) if self._fixt else None),
        ))  # fmt: skip
        for entry_type, price, size in (
            ("0", quote.bid, quote.bid_size),
            ("1", quote.ask, quote.ask_size),
        ):
            group = fix.Group(Tag.NO_MD_ENTRIES, Tag.MD_ENTRY_TYPE)
            _set(group, (
                (Tag.MD_ENTRY_TYPE, entry_type),
                (Tag.MD_ENTRY_PX, format_decimal(price)),
                (Tag.MD_ENTRY_SIZE, format_decimal(size)),
            ))  # fmt: skip
            message.addGroup(group)
        return message

    def _on_quotes(self, quotes: list[Quote]) -> None:
        """Engine step (runner thread): one incremental refresh for the subscribed symbols."""
        self._misbehave_on_step()
        self._expire_due()
        try:
            if not self._logged_on.is_set():
                return
            with self._lock:
                wanted = [q for q in quotes if q.symbol in self._market_data]
            if not wanted:
                return
            message = self._new("X")
            for quote in wanted:
                for entry_type, price, size in (
                    ("0", quote.bid, quote.bid_size),
                    ("1", quote.ask, quote.ask_size),
                ):
                    group = fix.Group(Tag.NO_MD_ENTRIES, Tag.MD_UPDATE_ACTION)
                    _set(group, (
                        (Tag.MD_UPDATE_ACTION, "0"),
                        (Tag.MD_ENTRY_TYPE, entry_type),
                        (Tag.SYMBOL, quote.symbol),
                        (Tag.MD_ENTRY_PX, format_decimal(price)),
                        (Tag.MD_ENTRY_SIZE, format_decimal(size)),
                    ))  # fmt: skip
                    message.addGroup(group)
            self._send(message)
        except Exception:
            self.callback_errors += 1
            _log.exception("fix venue: publishing quotes failed")

    def _expire_due(self) -> None:
        """Take the GTD orders whose ExpireTime has passed off the book (engine step); each is
        reported expired (ExecType C)."""
        try:
            now = time.time_ns()
            with self._lock:
                due = [coid for coid, record in self._orders.items()
                       if record.expire_ns is not None and record.expire_ns <= now
                       and not record.expiring and record.status in (_NEW, _PARTIAL)]
                for coid in due:
                    self._orders[coid].expiring = True
            for coid in due:
                self.engine.cancel(self.account, coid)
        except Exception:
            self.callback_errors += 1
            _log.exception("fix venue: expiring orders failed")

    def _misbehave_on_step(self) -> None:
        """Busts, corrections and fills from elsewhere, at an engine step (lock held)."""
        try:
            behaviour = self.behaviour
            with self._lock:
                due, self._amendments_due = self._amendments_due, []
            tick = self.engine.config.tick_size
            for kind, fill_id in due:
                try:
                    if kind == "bust":
                        self.engine.bust(self.account, fill_id)
                        continue
                    original = next((f for f in reversed(self.engine.executions(self.account))
                                     if f.fill_id == fill_id), None)
                    if original is None:
                        continue
                    worse = original.price + tick if original.side is Side.BUY else original.price - tick
                    self.engine.correct(self.account, fill_id, price=max(worse, tick))
                except ValueError:
                    continue  # busted or corrected meanwhile
            if self._draw("foreign", behaviour.foreign_fill_rate):
                draw = self._draws["foreign"]
                symbol = draw.choice(self.engine.symbols)
                side = Side.BUY if draw.random() < 0.5 else Side.SELL
                self.engine.external_fill(self.account, symbol, side, Decimal(draw.randint(1, 10)))
        except Exception:
            self.callback_errors += 1
            _log.exception("fix venue: misbehaving failed")

    # ---- orders ----------------------------------------------------------------------------

    def _on_new_order(self, message: fix.Message) -> None:
        coid = message.getField(Tag.CL_ORD_ID)
        wire_type = message.getHeader().getField(Tag.MSG_TYPE)
        behaviour = self.behaviour
        if self._draw("session_reject", behaviour.session_reject_rate):
            _log.info(f"fix venue {self.engine.venue}: order {coid} refused at session level")
            self._session_reject(message, wire_type, "order refused at session level")
            return
        if self._draw("business_reject", behaviour.business_reject_rate):
            self._business_reject(message, wire_type, "order entry not available",
                                  ref_id=coid, reason="4")  # application not available
            return
        if self._draw("drop", behaviour.drop_rate):
            _log.info(f"fix venue {self.engine.venue}: order {coid} dropped in flight")
            with self._lock:
                self.dropped.append(coid)
            return
        try:
            order = self._decode_order(message)
            expire_ns = expire_time_of(message)
            expired = expired_on_arrival(message, time.time_ns())
        except (BadRequest, ValueError, InvalidOperation, KeyError, fix.FieldNotFound) as exc:
            self._reject_raw(message, coid, f"invalid order: {exc}")
            return
        if expired:
            _log.info(f"fix venue {self.engine.venue}: order {coid} refused: {expired}")
            self._reject_raw(message, coid, expired, reason=_TOO_LATE_TO_ENTER)
            return
        with self._lock:
            duplicate = coid in self._orders
            if not duplicate:
                self._orders[coid] = _Order(order=order, expire_ns=expire_ns)
        if duplicate:
            self._send(self._report(
                _Order(order=order, status=_REJECTED), "8", text=f"duplicate ClOrdID {coid}",
                reject_reason=RejectReason.DUPLICATE_ID,
            ))  # fmt: skip
            return
        self.engine.submit(self.account, order)

    def _decode_order(self, message: fix.Message) -> SubmitOrder:
        side = SIDES.get(message.getField(Tag.SIDE))
        if side is None:
            raise BadRequest(f"unsupported Side {message.getField(Tag.SIDE)}")
        order_type = ORD_TYPES.get(message.getField(Tag.ORD_TYPE))
        if order_type is None:
            raise BadRequest(f"unsupported OrdType {message.getField(Tag.ORD_TYPE)}")
        tif_code = _get(message, Tag.TIME_IN_FORCE) or "0"
        tif = TimeInForce.GTC if tif_code == GTD else TIFS.get(tif_code)  # GTD: until ExpireTime
        if tif is None:
            raise BadRequest(f"unsupported TimeInForce {tif_code}")
        quantity = _get(message, Tag.ORDER_QTY)
        if quantity is None:
            raise BadRequest("OrderQty is required")
        price = _get(message, Tag.PRICE)
        stop = _get(message, Tag.STOP_PX)
        exec_inst = (_get(message, Tag.EXEC_INST) or "").split()
        return SubmitOrder(
            client_order_id=message.getField(Tag.CL_ORD_ID),
            venue=self.engine.venue,
            symbol=message.getField(Tag.SYMBOL),
            side=side,
            quantity=Decimal(quantity),
            order_type=order_type,
            limit_price=Decimal(price) if price is not None else None,
            stop_price=Decimal(stop) if stop is not None else None,
            time_in_force=tif,
            reduce_only="E" in exec_inst,
            source="fix",
            created_ns=time.time_ns(),
        )

    def _reject_raw(self, message: fix.Message, coid: str, text: str, *,
                    reason: str | None = None) -> None:
        """Reject an order that could not be decoded (or came too late), echoing what it
        said; ``reason`` is the OrdRejReason (other by default)."""
        report = self._new("8")
        _set(report, (
            (Tag.ORDER_ID, "NONE"),
            (Tag.CL_ORD_ID, coid),
            (Tag.EXEC_ID, self._next_id("R")),
            (Tag.EXEC_TRANS_TYPE, "0" if self._legacy else None),
            (Tag.EXEC_TYPE, _REJECTED),
            (Tag.ORD_STATUS, _REJECTED),
            (Tag.ORD_REJ_REASON, reason or ("0" if self._legacy else "99")),
            (Tag.SYMBOL, _get(message, Tag.SYMBOL) or "N/A"),
            (Tag.SIDE, message.getField(Tag.SIDE)),
            (Tag.LEAVES_QTY, "0"),
            (Tag.CUM_QTY, "0"),
            (Tag.AVG_PX, "0"),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.TEXT, text[:200]),
        ))  # fmt: skip
        self._send(report)

    def _on_cancel_request(self, message: fix.Message) -> None:
        orig = message.getField(Tag.ORIG_CL_ORD_ID)
        cancel_id = message.getField(Tag.CL_ORD_ID)
        with self._lock:
            live = orig in self._orders
            if live:
                self._cancel_requests[orig] = cancel_id
        if not live:
            self._send(self._cancel_reject(orig, cancel_id, f"unknown order {orig}"))
            return
        self.engine.cancel(self.account, orig)

    def _cancel_reject(self, orig: str, cancel_id: str, text: str) -> fix.Message:
        reject = self._new("9")
        _set(reject, (
            (Tag.ORDER_ID, "NONE"),
            (Tag.CL_ORD_ID, cancel_id),
            (Tag.ORIG_CL_ORD_ID, orig),
            (Tag.ORD_STATUS, _REJECTED),
            (Tag.CXL_REJ_RESPONSE_TO, "1"),
            (Tag.CXL_REJ_REASON, "1"),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.TEXT, text[:200]),
        ))  # fmt: skip
        return reject

    def _on_mass_cancel(self, message: fix.Message) -> None:
        request_id = message.getField(Tag.CL_ORD_ID)
        kind = message.getField(Tag.MASS_CANCEL_REQUEST_TYPE)
        symbol = _get(message, Tag.SYMBOL)
        mode = self.behaviour.mass_cancel
        if mode == "ignore":
            self.misbehaviours["mass_cancel_ignored"] = self.misbehaviours.get("mass_cancel_ignored", 0) + 1
            _log.info(f"fix venue {self.engine.venue}: mass cancel {request_id} left unanswered")
            return
        if mode == "refuse":
            self.misbehaviours["mass_cancel_refused"] = self.misbehaviours.get("mass_cancel_refused", 0) + 1
            self._send(self._mass_cancel_report(request_id, kind, "0", 0, symbol, rejected=True,
                                                text="mass cancel refused by the venue"))
            return
        if kind == "7":
            count = self.engine.cancel_all(self.account)
        elif kind == "1" and symbol is not None:
            working = [
                w.order.client_order_id
                for w in self.engine.open_orders(self.account)
                if w.order.symbol == symbol
            ]
            for coid in working:
                self.engine.cancel(self.account, coid)
            count = len(working)
        else:
            self._send(self._mass_cancel_report(request_id, kind, "0", 0, symbol, rejected=True))
            return
        self._send(self._mass_cancel_report(request_id, kind, kind, count, symbol))

    def _mass_cancel_report(
        self, request_id: str, kind: str, response: str, count: int, symbol: str | None,
        *, rejected: bool = False, text: str = "mass cancel type not supported",
    ) -> fix.Message:
        report = self._new("r")
        _set(report, (
            (Tag.CL_ORD_ID, request_id),
            (Tag.ORDER_ID, f"MC-{request_id}"),
            (Tag.MASS_ACTION_REPORT_ID, f"MC-{request_id}" if self._fixt else None),
            (Tag.MASS_CANCEL_REQUEST_TYPE, kind),
            (Tag.MASS_CANCEL_RESPONSE, response),
            (Tag.MASS_CANCEL_REJECT_REASON, "0" if rejected else None),
            (Tag.TOTAL_AFFECTED_ORDERS, str(count)),
            (Tag.SYMBOL, symbol),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.TEXT, text if rejected else None),
        ))  # fmt: skip
        return report

    # ---- engine events (engine thread, engine lock held) ----------------------------------

    def _on_order_event(self, account: str, event: OrderEvent) -> None:
        if account != self.account:
            return
        try:
            message = self._event_message(event)
        except Exception:
            self.callback_errors += 1
            _log.exception(f"fix venue: cannot report {type(event).__name__}")
            return
        if message is not None:
            self._send(message)

    def _event_message(self, event: OrderEvent) -> fix.Message | None:
        coid = event.client_order_id
        with self._lock:
            record = self._orders.get(coid)
            if isinstance(event, OrderAccepted):
                if record is None:
                    return None
                record.venue_order_id = event.venue_order_id
                record.status = _NEW
                return self._report(record, "0")
            if isinstance(event, OrderFilled):
                if record is None:
                    return self._foreign_report(event)
                behaviour = self.behaviour
                if self._draw("bust", behaviour.bust_rate):
                    self._amendments_due.append(("bust", event.fill_id))
                elif self._draw("correct", behaviour.correct_rate):
                    self._amendments_due.append(("correct", event.fill_id))
                record.cum += event.quantity
                record.notional += event.quantity * event.price
                record.status = _PARTIAL if event.leaves_quantity else _FILLED
                if not event.leaves_quantity:
                    self._forget(coid)
                return self._report(record, "F", fill=event)
            if isinstance(event, OrderCancelled):
                if record is None:
                    return None
                if record.expiring:
                    record.status = _EXPIRED
                    self._forget(coid)
                    return self._report(record, _EXPIRED, text="expired at its ExpireTime")
                record.status = _CANCELED
                cancel_id = self._cancel_requests.get(coid)
                self._forget(coid)
                return self._report(record, "4", text=event.text, cancel_id=cancel_id)
            # OrderRejected: for a new order, or for a cancel request
            if record is not None and record.status == _PENDING_NEW:
                record.status = _REJECTED
                self._forget(coid)
                return self._report(record, "8", text=event.text, reject_reason=event.reason)
            cancel_id = self._cancel_requests.pop(coid, None)
        if cancel_id is not None:
            return self._cancel_reject(coid, cancel_id, event.text)
        _log.warning(f"fix venue {self.engine.venue}: reject for unknown order {coid}")
        return None

    def _foreign_report(self, fill: OrderFilled) -> fix.Message:
        """A Trade report for an order this session never sent (caller holds the lock)."""
        status = self.engine.order_status(self.account, fill.client_order_id)
        if status is not None:
            record = _record_of(status)
        else:
            record = _Order(
                order=SubmitOrder(client_order_id=fill.client_order_id, venue=self.engine.venue,
                                  symbol=fill.symbol, side=fill.side,
                                  quantity=fill.quantity + fill.leaves_quantity),
                venue_order_id=fill.venue_order_id,
                status=_PARTIAL if fill.leaves_quantity else _FILLED,
                cum=fill.quantity, notional=fill.quantity * fill.price,
            )
        _log.info(f"fix venue {self.engine.venue}: fill {fill.fill_id} for an order the "
                  f"session never sent ({fill.client_order_id})")
        return self._report(record, "F", fill=fill)

    def _on_amendment(self, amended: TradeAmended) -> None:
        """A trade bust or correction at the engine: ExecType H or G (engine lock held)."""
        if amended.account != self.account:
            return
        try:
            original = amended.original
            coid = original.client_order_id
            status = self.engine.order_status(self.account, coid)
            with self._lock:
                record = self._orders.get(coid)
                if status is not None:
                    fresh = _record_of(status)
                    if record is not None:  # keep the live record in step with the venue
                        record.cum, record.notional = fresh.cum, fresh.notional
                    record = fresh
            if record is None:
                record = _Order(
                    order=SubmitOrder(client_order_id=coid, venue=self.engine.venue,
                                      symbol=original.symbol, side=original.side,
                                      quantity=original.quantity + original.leaves_quantity),
                    venue_order_id=original.venue_order_id, status=_FILLED,
                )
            corrected = amended.corrected
            report = self._report(
                record, "G" if corrected is not None else "H",
                fill=corrected if corrected is not None else original,
                exec_id=corrected.fill_id if corrected is not None else self._next_id("X"),
                text="trade corrected" if corrected is not None else "trade busted",
            )
            report.setField(_EXEC_REF_ID, original.fill_id)
        except Exception:
            self.callback_errors += 1
            _log.exception("fix venue: cannot report a trade amendment")
            return
        self._send(report)

    def _forget(self, coid: str) -> None:
        """Drop a done order (caller holds the lock)."""
        self._orders.pop(coid, None)
        self._cancel_requests.pop(coid, None)

    def _report(
        self,
        record: _Order,
        exec_type: str,
        *,
        fill: OrderFilled | None = None,
        text: str = "",
        reject_reason: RejectReason | None = None,
        cancel_id: str | None = None,
        status_of: str | None = None,
        exec_id: str | None = None,
    ) -> fix.Message:
        """An ExecutionReport for ``record``.

        ``exec_type`` is the 4.4 code ("0", "4", "8", "F" for a trade, "I" for a status
        report); on 4.2 it becomes the 4.2 code plus ExecTransType.
        """
        order = record.order
        status = status_of or record.status
        trans_type = None
        wire_exec_type = exec_type
        if self._legacy:
            trans_type = "0"
            if exec_type == "F":
                wire_exec_type = _PARTIAL if status == _PARTIAL else _FILLED
            elif exec_type == "I":
                trans_type = "3"
                wire_exec_type = status
            elif exec_type in ("H", "G"):  # 4.2: ExecTransType Cancel / Correct
                trans_type = "1" if exec_type == "H" else "2"
                wire_exec_type = status
        report = self._new("8")
        _set(report, (
            (Tag.ORDER_ID, record.venue_order_id or "NONE"),
            (Tag.CL_ORD_ID, cancel_id or order.client_order_id),
            (Tag.ORIG_CL_ORD_ID, order.client_order_id if cancel_id else None),
            (Tag.EXEC_ID, exec_id or (fill.fill_id if fill is not None else self._next_id("E"))),
            (Tag.EXEC_TRANS_TYPE, trans_type),
            (Tag.EXEC_TYPE, wire_exec_type),
            (Tag.ORD_STATUS, status),
            (Tag.ORD_REJ_REASON, self._reject_code(reject_reason)),
            (Tag.ACCOUNT, self.account),
            (Tag.SYMBOL, order.symbol),
            (Tag.SIDE, SIDE_CODES[order.side]),
            (Tag.ORDER_QTY, format_decimal(order.quantity)),
            (Tag.ORD_TYPE, ORD_TYPE_CODES[order.order_type]),
            (Tag.PRICE, format_decimal(order.limit_price) if order.limit_price is not None else None),
            (Tag.STOP_PX, format_decimal(order.stop_price) if order.stop_price is not None else None),
            (Tag.TIME_IN_FORCE, TIF_CODES[order.time_in_force]),
            (Tag.LAST_QTY, format_decimal(fill.quantity) if fill is not None else None),
            (Tag.LAST_PX, format_decimal(fill.price) if fill is not None else None),
            (Tag.LEAVES_QTY, format_decimal(record.leaves)),
            (Tag.CUM_QTY, format_decimal(record.cum)),
            (Tag.AVG_PX, format_decimal(record.avg_px)),
            (Tag.TRANSACT_TIME, utc_timestamp(fill.ts_ns if fill is not None else None)),
            (Tag.TEXT, text[:200] or None),
        ))  # fmt: skip
        return report

    def _reject_code(self, reason: RejectReason | None) -> str | None:
        if reason is None:
            return None
        if reason is RejectReason.UNKNOWN_SYMBOL:
            return "1"
        if reason is RejectReason.DUPLICATE_ID:
            return "6"
        return "0" if self._legacy else "99"

    def _restore_orders(self) -> None:
        """Rebuild the live-order records from the engine (a restarted venue)."""
        working = self.engine.open_orders(self.account)
        if not working:
            return
        notional: dict[str, Decimal] = {}
        for fill in self.engine.executions(self.account):
            notional[fill.client_order_id] = (
                notional.get(fill.client_order_id, _ZERO) + fill.quantity * fill.price
            )
        with self._lock:
            for w in working:
                coid = w.order.client_order_id
                if coid not in self._orders:
                    self._orders[coid] = _Order(
                        order=w.order,
                        venue_order_id=w.venue_order_id,
                        status=_PARTIAL if w.filled else _NEW,
                        cum=w.filled,
                        notional=notional.get(coid, _ZERO),
                    )

    # ---- positions and order status --------------------------------------------------------

    def _on_position_request(self, message: fix.Message) -> None:
        req_id = message.getField(Tag.POS_REQ_ID)
        kind = message.getField(Tag.POS_REQ_TYPE)
        positions = self.engine.positions(self.account) if kind == "0" else []
        today = time.strftime("%Y%m%d", time.gmtime())
        ack = self._new("AO")
        # 0 valid, 1 invalid or unsupported request, 2 no positions found
        result = ("0" if positions else "2") if kind == "0" else "1"
        _set(ack, (
            (Tag.POS_MAINT_RPT_ID, f"{req_id}-ack"),
            (Tag.POS_REQ_ID, req_id),
            (Tag.TOTAL_NUM_POS_REPORTS, str(len(positions))),
            (Tag.POS_REQ_RESULT, result),
            (Tag.POS_REQ_STATUS, "0" if kind == "0" else "2"),
            (Tag.ACCOUNT, self.account),
            (Tag.ACCOUNT_TYPE, "1"),
            (Tag.TEXT, None if kind == "0" else f"PosReqType {kind} not supported"),
        ))  # fmt: skip
        self._send(ack)
        for index, position in enumerate(positions, start=1):
            report = self._new("AP")
            _set(report, (
                (Tag.POS_MAINT_RPT_ID, f"{req_id}-{index}"),
                (Tag.POS_REQ_ID, req_id),
                (Tag.POS_REQ_TYPE, "0"),
                (Tag.TOTAL_NUM_POS_REPORTS, str(len(positions))),
                (Tag.POS_REQ_RESULT, "0"),
                (Tag.CLEARING_BUSINESS_DATE, today),
                (Tag.ACCOUNT, self.account),
                (Tag.ACCOUNT_TYPE, "1"),
                (Tag.SYMBOL, position.symbol),
                (Tag.SETTL_PRICE, format_decimal(position.average_price)),
                (Tag.SETTL_PRICE_TYPE, "1"),
                (Tag.PRIOR_SETTL_PRICE, "0"),
            ))  # fmt: skip
            group = fix.Group(Tag.NO_POSITIONS, Tag.POS_TYPE)
            _set(group, (
                (Tag.POS_TYPE, "TOT"),
                (Tag.LONG_QTY, format_decimal(max(position.quantity, _ZERO))),
                (Tag.SHORT_QTY, format_decimal(max(-position.quantity, _ZERO))),
            ))  # fmt: skip
            report.addGroup(group)
            self._send(report)

    def _on_status_request(self, message: fix.Message) -> None:
        """OrderStatusRequest (H): one ExecutionReport with ExecType=I for the order."""
        coid = message.getField(Tag.CL_ORD_ID)
        if not self.behaviour.answer_status:
            self.misbehaviours["status_ignored"] = self.misbehaviours.get("status_ignored", 0) + 1
            return
        req_id = _get(message, _ORD_STATUS_REQ_ID)
        status = self.engine.order_status(self.account, coid)
        with self._lock:
            pending = self._orders.get(coid)
        if status is not None:
            report = self._report(_record_of(status), "I")
        elif pending is not None:  # accepted by the front, not yet at the engine (latency)
            report = self._report(pending, "I")
        else:
            report = self._new("8")
            _set(report, (
                (Tag.ORDER_ID, "NONE"),
                (Tag.CL_ORD_ID, coid),
                (Tag.EXEC_ID, self._next_id("S")),
                (Tag.EXEC_TRANS_TYPE, "3" if self._legacy else None),
                (Tag.EXEC_TYPE, _REJECTED if self._legacy else "I"),
                (Tag.ORD_STATUS, _REJECTED),
                (Tag.ORD_REJ_REASON, "5"),  # unknown order
                (Tag.ACCOUNT, self.account),
                (Tag.SYMBOL, _get(message, Tag.SYMBOL) or "N/A"),
                (Tag.SIDE, _get(message, Tag.SIDE) or "1"),
                (Tag.LEAVES_QTY, "0"),
                (Tag.CUM_QTY, "0"),
                (Tag.AVG_PX, "0"),
                (Tag.TRANSACT_TIME, utc_timestamp()),
                (Tag.TEXT, f"unknown order {coid}"[:200]),
            ))  # fmt: skip
        if req_id is not None and not self._legacy:
            report.setField(_ORD_STATUS_REQ_ID, req_id)
        self._send(report)

    def _on_mass_status(self, message: fix.Message) -> None:
        """Status of every working order; with ``replay_trades`` also today's executions
        replayed (PossResend=Y)."""
        req_id = message.getField(Tag.MASS_STATUS_REQ_ID)
        kind = message.getField(Tag.MASS_STATUS_REQ_TYPE)
        symbol = _get(message, Tag.SYMBOL)
        if kind not in ("1", "7") or (kind == "1" and symbol is None):
            raise BadRequest(f"MassStatusReqType {kind} not supported")
        working = [
            w for w in self.engine.open_orders(self.account)
            if kind == "7" or w.order.symbol == symbol
        ]  # fmt: skip
        day_start_ns = (time.time_ns() // _DAY_NS) * _DAY_NS  # today's executions (UTC day)
        fills = [
            f for f in self.engine.executions(self.account)
            if (kind == "7" or f.symbol == symbol) and f.ts_ns >= day_start_ns
        ]  # fmt: skip
        notional: dict[str, Decimal] = {}
        for fill in fills:
            coid = fill.client_order_id
            notional[coid] = notional.get(coid, _ZERO) + fill.quantity * fill.price
        if not self.behaviour.replay_trades:
            fills = []
        reports = [
            self._report(
                _Order(
                    order=w.order,
                    venue_order_id=w.venue_order_id,
                    status=_PARTIAL if w.filled else _NEW,
                    cum=w.filled,
                    notional=notional.get(w.order.client_order_id, _ZERO),
                ),
                "I",
            )
            for w in working
        ]
        orders = {w.order.client_order_id: w.order for w in working}
        replayed: dict[str, _Order] = {}
        for fill in fills:
            coid = fill.client_order_id
            if coid not in replayed:
                order = orders.get(coid) or SubmitOrder(
                    client_order_id=coid,
                    venue=self.engine.venue,
                    symbol=fill.symbol,
                    side=fill.side,
                    quantity=fill.quantity + fill.leaves_quantity,
                )
                replayed[coid] = _Order(order=order, venue_order_id=fill.venue_order_id)
            record = replayed[coid]
            record.cum += fill.quantity
            record.notional += fill.quantity * fill.price
            record.status = _PARTIAL if fill.leaves_quantity else _FILLED
            report = self._report(record, "F", fill=fill)
            report.setField(Tag.LEAVES_QTY, format_decimal(fill.leaves_quantity))
            report.getHeader().setField(Tag.POSS_RESEND, "Y")
            reports.append(report)
        for index, report in enumerate(reports, start=1):
            _set(report, (
                (Tag.MASS_STATUS_REQ_ID, req_id),
                (Tag.TOT_NUM_REPORTS, str(len(reports))),
                (Tag.LAST_RPT_REQUESTED, "Y" if index == len(reports) else "N"),
            ))  # fmt: skip
            self._send(report)


_FIX_STATUS = {
    OrderStatus.ACCEPTED: _NEW,
    OrderStatus.PARTIALLY_FILLED: _PARTIAL,
    OrderStatus.FILLED: _FILLED,
    OrderStatus.CANCELLED: _CANCELED,
    OrderStatus.REJECTED: _REJECTED,
}


def _record_of(status: WorkingOrder) -> _Order:
    """The front's record of an order as the engine reports it."""
    return _Order(
        order=status.order,
        venue_order_id=status.venue_order_id,
        status=_FIX_STATUS.get(status.status, _NEW),
        cum=status.filled,
        notional=status.filled * status.average_price,
    )


# ---- command line: tradeguard venue fix --port N --state-dir DIR ----------------------------


def _parser() -> argparse.ArgumentParser:
    from venues.process import add_common_options

    parser = argparse.ArgumentParser(
        prog="tradeguard venue fix",
        description="Run the simulated venue behind a FIX acceptor on 127.0.0.1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_options(parser, port=9878, state_dir=Path("state/venue-fix"),
                       state_help="engine state and the FIX store", name="fix-sim")
    parser.add_argument("--begin-string", default=FIX44, choices=sorted(BEGIN_STRINGS),
                        help="FIX version")
    parser.add_argument("--sender-comp-id", default="VENUE", help="the venue's comp id")
    parser.add_argument("--target-comp-id", default="TRADEGUARD", help="the client's comp id")
    parser.add_argument("--account", default=None,
                        help="the engine account traded (default: the target comp id)")
    misbehave = parser.add_argument_group(
        "misbehaviour", "what real venues do that a kind simulator does not (rates are 0..1)")
    misbehave.add_argument("--standard-recovery", action="store_true",
                           help="answer OrderMassStatusRequest (AF) with order statuses only, "
                                "no trade replay (missed fills: resend and 35=H); the default")
    misbehave.add_argument("--replay-trades", action="store_true",
                           help="also replay today's executions on AF (not standard)")
    misbehave.add_argument("--no-resend-fills", action="store_true",
                           help="gap-fill execution reports on a ResendRequest instead of "
                                "resending them (fills while the session is down are lost)")
    misbehave.add_argument("--mass-cancel", choices=sorted(MASS_CANCEL_MODES), default="accept",
                           help="carry out, refuse (35=r MassCancelResponse=0) or ignore "
                                "OrderMassCancelRequest")
    misbehave.add_argument("--session-reject-rate", type=float, default=0.0,
                           help="share of orders answered by a session-level Reject (35=3)")
    misbehave.add_argument("--business-reject-rate", type=float, default=0.0,
                           help="share of orders answered by a BusinessMessageReject (35=j)")
    misbehave.add_argument("--drop-rate", "--drop-order-rate", dest="drop_rate", type=float,
                           default=0.0,
                           help="share of orders dropped in flight (never acknowledged)")
    misbehave.add_argument("--no-status-answers", action="store_true",
                           help="read OrderStatusRequests (35=H) and never answer them")
    misbehave.add_argument("--bust-rate", type=float, default=0.0,
                           help="share of trades busted afterwards (ExecType=H)")
    misbehave.add_argument("--correct-rate", type=float, default=0.0,
                           help="share of trades corrected afterwards (ExecType=G)")
    misbehave.add_argument("--foreign-fill-rate", type=float, default=0.0,
                           help="chance per step of a fill for an order the client never sent")
    return parser


def behaviour_from_args(args: argparse.Namespace) -> FixBehaviour:
    """The ``FixBehaviour`` the command line asks for (``ValueError`` naming a bad option)."""
    return FixBehaviour(
        replay_trades=args.replay_trades and not args.standard_recovery,
        resend_fills=not args.no_resend_fills,
        mass_cancel=args.mass_cancel,
        session_reject_rate=args.session_reject_rate,
        business_reject_rate=args.business_reject_rate,
        drop_rate=args.drop_rate,
        answer_status=not args.no_status_answers,
        bust_rate=args.bust_rate,
        correct_rate=args.correct_rate,
        foreign_fill_rate=args.foreign_fill_rate,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run engine, engine runner and FIX acceptor until SIGTERM or SIGINT."""
    from venues.engine import EngineConfig, VenueEngine, step_volatility_bps
    from venues.process import serve_until_signalled, venue_argv

    parser = _parser()
    args = parser.parse_args(venue_argv(argv))
    try:
        behaviour = behaviour_from_args(args)
        engine = VenueEngine(args.name, EngineConfig(
            seed=args.seed, volatility_bps=step_volatility_bps(args.annual_volatility, args.interval)))
        venue = FixVenue(
            engine,
            args.port,
            args.state_dir / "fix",
            begin_string=args.begin_string,
            sender_comp_id=args.sender_comp_id,
            target_comp_id=args.target_comp_id,
            account=args.account,
            behaviour=behaviour,
            host=args.host,
        )
    except ValueError as exc:
        parser.error(str(exc))

    def start_front() -> str:
        venue.start()
        return (f"fix venue {args.name}: {args.begin_string} {args.sender_comp_id} on "
                f"{args.host}:{args.port}, state in {args.state_dir}")

    return serve_until_signalled(engine, interval_s=args.interval,
                                 state_path=args.state_dir / "fix-venue.json",
                                 start_front=start_front, stop_front=venue.stop)

if __name__ == "__main__":
    raise SystemExit(main())
