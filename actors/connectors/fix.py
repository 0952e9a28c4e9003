"""The FIX connector: one quickfix initiator session to a FIX venue.

quickfix owns the socket and its thread. The session level (Logon, Heartbeat,
TestRequest, ResendRequest, SequenceReset, Logout) is quickfix's; its store under the
connector's state directory keeps sequence numbers across restarts, so a reconnecting
connector gets every ExecutionReport it missed by an ordinary ResendRequest, when the
venue resends them (the order status requests below cover a venue that does not). Application
orders, cancels and mass cancels of our own are never resent after a reconnect (a stale
order must not reach the venue late): ``toApp`` turns their resend into a gap fill.
Requests (status, positions, market data) are resent: the venue may ask for the ones
sent just after a logon, before its own ResendRequest arrived.

``connect`` starts the initiator and returns; quickfix connects once and the logon is the
session coming up. An attempt without a logon within ``connect_timeout_s`` is stopped and
the next one scheduled with the connector's backoff. The quickfix thread decodes
each application message through a dispatch table and hands the result to the actor
through the connection attempt's ``SessionLink``; one bad message is counted as malformed
and skipped. A message that quickfix itself refuses (bad field value, missing required
field) never reaches the application: the session Reject quickfix sends back is counted
as malformed instead. No callback lets a Python exception escape into quickfix, which
would end the process.

Message flow (docs/fix.md has the whole subset):

- ``subscribe``: one MarketDataRequest (V) per symbol; the entries of every W or X are
  applied to the symbols' level-1 books (``core.l1_book``) and the books they changed
  go out as one ``QuoteBatch``; a book without both sides sends nothing.
- ``submit``: NewOrderSingle (D). ExecutionReports (8) become ``OrderAccepted``,
  ``OrderFilled`` (partial and full), ``OrderCancelled`` and ``OrderRejected`` (the
  venue's OrdRejReason code and Text); ExecType=C (and OrdStatus=C in a status report)
  is an ``OrderCancelled`` flagged ``expired``.
- ``cancel``: OrderCancelRequest (F); an OrderCancelReject (9) is logged and counted.
- ``cancel_all``: OrderMassCancelRequest (q, all orders); the report (r) becomes
  ``CancelAllDone``.
- ``request_positions``: RequestForPositions (AN); the ack (AO) says how many
  PositionReports (AP) follow; they become one ``VenuePositions``.
- ``resync`` (every logon): one OrderStatusRequest (H) per order of this venue that is
  not terminal (sent in this process, or -- after a start -- read from the journal), then
  OrderMassStatusRequest (AF), then AN for the positions. The status reports
  (ExecType=I) recover what happened while the session was down: CumQty ahead of what
  was published becomes one ``OrderFilled`` flagged ``inferred`` (deterministic fill id
  ``inferred:<ClOrdID>:<CumQty>``, price derived from AvgPx and the fills published), a
  terminal OrdStatus the matching terminal event, an order the venue does not know a
  rejection with a WARNING. The venue replaying trades is never relied on.
- 35=3 (session Reject of a NewOrderSingle) and 35=j (BusinessMessageReject, RefMsgType
  D) end the order with ``OrderRejected``.
- ExecType H / G (trade bust / correction) become ``FillBusted`` / ``FillCorrected``
  and a WARNING ``SafetyEvent``; the position keeper applies them.
- A Logout or a dropped connection after logon is a lost session, and a Logout answering
  our Logon a failed attempt: the connector stops the initiator and reconnects with
  backoff.

Versions: ``FIX.4.4`` (the default) and ``FIX.4.2``. FIX 4.2 has no AN/AO/AP, q/r or AF;
on 4.2 the same bodies travel under user-defined message types (``U`` + the 4.4 type),
with a FIX 4.2 dictionary extended with them (generated into the store directory), as
the simulated venue (venues/fix_venue.py) expects; both sides take the extension, the
tags and the codes from ``messages.fix_spec``. ``FIXT.1.1`` (FIX 5.0 SP2) is
configured with the FIXT11/FIX50SP2 dictionaries and uses the 4.4 message bodies; it is
exercised by one test against the simulated venue, which serves the same subset over
FIXT.1.1. A production 5.0 SP2 venue may require fields this subset leaves out.

Staleness (``core.staleness``): a TestRequest (35=1, TestReqID ``tg-probe-…``) probes the
logged-on session every ``probe_interval_s``; the venue must answer with a Heartbeat
echoing its TestReqID. Once none has come for ``probe_interval_s + probe_timeout_s`` the
session is stale and ``submit`` refuses every new order (``VENUE_DOWN``) instead of
writing it. After ``stale_after_s`` the session is declared dead: its socket gets
``SO_LINGER`` 0 (found by its peer: quickfix has no option for it), the initiator is
stopped, so the kernel drops what it has not sent, and the connector reconnects. With
``order_expiry_s`` resting limit orders go GTD with an ExpireTime; an order first
acknowledged more than ``late_ack_warn_s`` after it was sent raises a WARNING
``late_execution`` safety event.

quickfix's ``Application`` callbacks keep quickfix's camelCase names (``onLogon``,
``fromApp``...); everything else is snake_case.
"""

from __future__ import annotations

import itertools
import math
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import quickfix as fix
from msgspec import Meta

from actors import topics
from actors.connectors._io import SessionLink, SessionUp
from actors.connectors._staleness import linger_zero
from actors.connectors.base import Connector, ConnectorConfig
from actors.errors import ConnectorError, JournalError
from actors.journal import Journal
from core.l1_book import L1Book, L1Books
from core.staleness import LateAcks, Liveness, SessionProbe, expire_time_ns, takes_gtd
from messages import (
    PRICE_BOUNDS,
    CancelAllDone,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    QuoteBatch,
    RejectReason,
    SafetyEvent,
    Severity,
    SubmitOrder,
    VenuePosition,
    VenuePositions,
    check_decimal,
    now_ns,
)
from messages.bounds import FileName, Host, Label, Port, RelativePath
from messages.fix_spec import (
    BEGIN_STRINGS,
    EXTENDED_42_TYPES,
    FIX42,
    GTD,
    ORD_TYPE_CODES,
    SIDE_CODES,
    SIDES,
    TIF_CODES,
    Tag,
    data_dictionary_settings,
    format_decimal,
    utc_timestamp,
)
from messages.orders import FillBusted, FillCorrected
from supervision import TimerHandle, bus, scheduler


class FixConfig(ConnectorConfig, frozen=True, kw_only=True):
    """Settings of one FIX session (this side initiates)."""

    kind: str = "fix"
    """Always ``fix``."""
    host: Host = "127.0.0.1"
    """The venue's acceptor host."""
    port: Port = 9878
    """The venue's acceptor port."""
    begin_string: Literal["FIX.4.4", "FIX.4.2", "FIXT.1.1"] = "FIX.4.4"
    """``FIX.4.4``, ``FIX.4.2`` or ``FIXT.1.1`` (FIX 5.0 SP2)."""
    sender_comp_id: Annotated[Label, Meta(min_length=1)] = "TRADEGUARD"
    """Our SenderCompID (the venue's TargetCompID)."""
    target_comp_id: Annotated[Label, Meta(min_length=1)] = "VENUE"
    """The venue's SenderCompID."""
    account: Label = ""
    """Account (tag 1) on position requests; the SenderCompID when empty."""
    heartbeat_s: Annotated[int, Meta(ge=1, le=3600)] = 5
    """HeartBtInt proposed at logon, in whole seconds."""
    store_dir: RelativePath = "fix"
    """quickfix store and log directory, relative to the connector's state directory."""
    reset_on_logon: bool = False
    """Start both sides' sequence numbers at 1 on every logon (loses resend of missed
    executions; for venues that require it)."""
    journal: FileName = "journal.sqlite3"
    """File name, in the state directory, of the journal whose orders for this venue that
    are not terminal are queried (OrderStatusRequest) at every logon after a start (the
    keeper's ``journal_name``); read only, and only when the file exists."""
    probe_interval_s: Annotated[float, Meta(ge=0.05, le=60.0)] = 1.0
    """How often a TestRequest (35=1) probes the logged-on session. 0.05 to 60."""
    probe_timeout_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 0.5
    """How long a probe may go unanswered, beyond ``probe_interval_s`` since the last
    answering Heartbeat, before the session is stale and takes no new order. Above 0."""
    stale_after_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 5.0
    """Silence (no TestRequest answered) after which the session is declared dead, its
    socket reset and the session reconnected. Above 0."""
    late_ack_warn_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 2.0
    """An order first acknowledged by the venue (ExecutionReport) more than this long after
    it was sent raises a ``late_execution`` WARNING. Above 0."""
    order_expiry_s: Annotated[float, Meta(ge=0.0, le=86400.0)] = 0.0
    """Limit and stop-limit orders that would rest (DAY, GTC) are sent TimeInForce GTD (6)
    with ExpireTime (126) this many seconds after their sending, so the venue refuses one
    that arrives later and expires it then. 0 (the default) sends none."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.begin_string not in BEGIN_STRINGS:
            raise ValueError(
                f"begin_string: expected one of {sorted(BEGIN_STRINGS)}, got {self.begin_string!r}"
            )
        if not 0 < self.port < 65536:
            raise ValueError(f"port: must be within 1..65535, got {self.port}")
        if self.heartbeat_s < 1:
            raise ValueError(f"heartbeat_s: must be at least 1, got {self.heartbeat_s}")
        for name in ("host", "sender_comp_id", "target_comp_id", "store_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name}: must not be empty")
        if not self.journal or "/" in self.journal or self.journal in (".", ".."):
            raise ValueError(f"journal: must be a plain file name, got {self.journal!r}")
        _check_probe_settings(self)


def _check_probe_settings(cfg: FixConfig) -> None:
    """The probe, late acknowledgement and expiry settings, each finite within its range."""
    if not (math.isfinite(cfg.probe_interval_s) and 0.05 <= cfg.probe_interval_s <= 60):
        raise ValueError(f"probe_interval_s: must be within 0.05..60, got {cfg.probe_interval_s}")
    for name in ("probe_timeout_s", "stale_after_s", "late_ack_warn_s"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and 0 < value <= 3600):
            raise ValueError(f"{name}: must be above 0 and at most 3600, got {value}")
    if not (math.isfinite(cfg.order_expiry_s) and 0 <= cfg.order_expiry_s <= 86400):
        raise ValueError(f"order_expiry_s: must be within 0..86400, got {cfg.order_expiry_s}")


# ---- data dictionaries ------------------------------------------------------------------------

def spec_dir() -> Path:
    """The directory holding the FIX data dictionaries the quickfix wheel installs."""
    candidates = (
        Path(sysconfig.get_path("data")) / "share" / "quickfix",
        Path(sys.prefix) / "share" / "quickfix",
    )
    for candidate in candidates:
        if (candidate / "FIX44.xml").is_file():
            return candidate
    raise ConnectorError(f"quickfix data dictionaries not found in {candidates}")


def dictionary_settings(begin_string: str, directory: Path) -> dict[str, str]:
    """quickfix settings selecting (and for 4.2 generating) the data dictionaries."""
    try:
        return data_dictionary_settings(begin_string, spec_dir(), directory)
    except ValueError as exc:
        raise ConnectorError(str(exc)) from exc


# ---- field helpers -------------------------------------------------------------------------------


def _get(fields: fix.FieldMap, tag: int) -> str | None:
    return fields.getField(tag) if fields.isSetField(tag) else None


def _groups(message: fix.FieldMap, count_tag: int, delimiter: int) -> list[fix.Group]:
    found = []
    for index in range(1, int(_get(message, count_tag) or 0) + 1):
        group = fix.Group(count_tag, delimiter)
        message.getGroup(index, group)
        found.append(group)
    return found


def _set(fields: fix.FieldMap, values: Iterable[tuple[int, str | None]]) -> None:
    for tag, value in values:
        if value is not None:
            fields.setField(tag, value)


def _decimal(fields: fix.FieldMap, tag: int, default: str | None = None) -> Decimal:
    text = _get(fields, tag)
    if text is None:
        if default is None:
            raise ValueError(f"tag {tag} missing")
        text = default
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"tag {tag}: not a number: {text!r}") from None
    check_decimal(f"tag {tag}", value, *PRICE_BOUNDS)  # nothing absurd enters a book or a sum
    return value


def _timestamp_ns(text: str | None) -> int:
    """Nanoseconds of a FIX UTCTimestamp (``YYYYMMDD-HH:MM:SS[.fff...]``); 0 when absent."""
    if not text:
        return 0
    stamp, _, fraction = text.partition(".")
    moment = datetime.strptime(stamp, "%Y%m%d-%H:%M:%S").replace(tzinfo=UTC)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return int(moment.timestamp()) * 1_000_000_000 + nanos


_REJECT_REASONS = {"1": RejectReason.UNKNOWN_SYMBOL, "6": RejectReason.DUPLICATE_ID}
_WORKING = frozenset({"0", "1", "A", "6", "E"})  # new, partial, pending new/cancel/replace
_ENDED = {"3": "done for day", "4": "cancelled", "C": "expired"}  # OrdStatus -> words
_UNKNOWN_ORDER = "5"  # OrdRejReason: unknown order
_EXEC_REF_ID = 19
_BUSINESS_REJECT_REF_ID = 379
_ORD_STATUS_REQ_ID = 790
_ZERO = Decimal(0)
_PRICE_STEP = Decimal("1e-10")  # places of a price derived from AvgPx
_MAX_SENT = 4096  # NewOrderSingle sequence numbers remembered for session Rejects
_RESENDABLE = frozenset({"H", "V", "AF", "AN", EXTENDED_42_TYPES["AF"], EXTENDED_42_TYPES["AN"]})
"""Requests that are resent when the venue asks (answering them again does no harm)."""
_RECONNECT_INTERVAL_S = 3600
"""quickfix's own reconnect interval: longer than any attempt, so it never reconnects."""
_MAX_PENDING = 256  # position / mass cancel requests remembered while unanswered
_PROBE_PREFIX = "tg-probe-"
"""TestReqID (112) prefix of this connector's probes; quickfix's own are ``TEST``."""
_PROBE_TICK_S = 0.25
"""Longest time between two looks at the probe's state (dead sessions are found this soon)."""
_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass
class _Order:
    """An order of this venue that is not terminal: what a cancel or a status request must
    repeat about it, and what has been published as filled."""

    symbol: str
    side: str
    quantity: str
    filled: Decimal = _ZERO
    """Quantity published as filled (``OrderFilled``), inferred fills included."""
    notional: Decimal = _ZERO
    """Sum of quantity times price of those fills."""


class _OrderListing:
    """The venue's working orders as the reports of one OrderMassStatusRequest list them,
    for one positions request."""

    def __init__(self, pos_req_id: str) -> None:
        self.pos_req_id = pos_req_id
        self.working: set[str] = set()
        self.complete = False
        """The report with LastRptRequested=Y arrived."""
        self.refused = False


@dataclass(frozen=True)
class _ProbeTick:
    """Time to look at the probe of connection attempt ``attempt`` (timer -> actor)."""

    attempt: int


@dataclass(frozen=True)
class _ProbeAnswer:
    """A Heartbeat answering one of our TestRequests arrived (quickfix thread -> actor)."""

    test_req_id: str
    at: float
    """Monotonic time of its arrival."""


@dataclass
class _PositionRequest:
    """One unanswered RequestForPositions."""

    request_id: str
    expected: int | None = None
    received: int = 0
    positions: list[VenuePosition] = field(default_factory=list)


class _Application(fix.Application):  # type: ignore[misc]
    """quickfix callbacks; each hands over to the connector and never raises."""

    def __init__(self, connector: FixConnector) -> None:
        super().__init__()
        self.connector = connector

    def onCreate(self, session_id: fix.SessionID) -> None:
        """A session object exists."""

    def onLogon(self, session_id: fix.SessionID) -> None:
        """Logged on."""
        self.connector._guard("onLogon", self.connector._on_logon)

    def onLogout(self, session_id: fix.SessionID) -> None:
        """The session ended: logout or disconnect."""
        self.connector._guard("onLogout", self.connector._on_logout)

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """An outgoing session message."""
        self.connector._guard("toAdmin", self.connector._on_outgoing_admin, message)

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """An incoming session message."""
        self.connector._guard("fromAdmin", self.connector._on_incoming_admin, message)

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """An outgoing application message: an order, cancel or mass cancel is never resent
        (a stale one must not reach the venue late); a request (status, positions, market
        data) is, so one the venue asks again for right after a logon still gets its
        answer."""
        try:
            header = message.getHeader()
            stale = (_get(header, Tag.POSS_DUP_FLAG) == "Y"
                     and _get(header, Tag.MSG_TYPE) not in _RESENDABLE)
        except BaseException:  # an exception escaping into quickfix ends the process
            self.connector.count_error()
            return
        if stale:
            raise fix.DoNotSend()
        self.connector._guard("toApp", self.connector._on_outgoing_app, message)

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """An incoming application message."""
        self.connector._guard("fromApp", self.connector._on_message, message)


class FixConnector(Connector):
    """A connector speaking FIX to one venue through a quickfix initiator."""

    kind: ClassVar[str] = "fix"
    config_type: ClassVar[type[ConnectorConfig]] = FixConfig

    def __init__(self, config: FixConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.fix_config = config
        self.session_id = fix.SessionID(
            config.begin_string, config.sender_comp_id, config.target_comp_id
        )
        self._legacy = config.begin_string == FIX42
        self._account = config.account or config.sender_comp_id
        self._initiator: fix.SocketInitiator | None = None
        self._application: _Application | None = None
        self._keep: tuple[object, ...] = ()
        self._link = SessionLink(None, 0)
        self._logged_on = threading.Event()
        self._closing = False
        self._logout_text = ""
        self._state_lock = threading.Lock()  # guards the maps below (actor and quickfix threads)
        self._orders: dict[str, _Order] = {}
        self._position_requests: dict[str, _PositionRequest] = {}
        self._mass_cancels: dict[str, str] = {}  # ClOrdID -> CancelAll.request_id
        self._listings: dict[str, _OrderListing] = {}  # MassStatusReqID -> listing for a PosReqID
        self._sent_orders: dict[int, str] = {}  # MsgSeqNum of a NewOrderSingle -> ClOrdID
        self._status_seen: set[str] = set()  # working orders reported by status this session
        self._journal_read = False
        self._books = L1Books(config.name)  # quickfix thread only; every change published
        self._probe: SessionProbe | None = None  # actor thread; None while no session is up
        self._probe_timer: TimerHandle | None = None
        self._probe_ids = itertools.count(1)
        self._probes_sent: dict[str, float] = {}  # TestReqID -> monotonic sending time
        self._late = LateAcks(config.late_ack_warn_s)  # actor thread
        self._ids = itertools.count(1)
        self._handlers: dict[str, Callable[[fix.Message], None]] = {
            "8": self._on_execution_report,
            "9": self._on_cancel_reject,
            "W": self._on_snapshot,
            "X": self._on_incremental,
            "Y": self._on_market_data_reject,
            "j": self._on_business_reject,
            "r": self._on_mass_cancel_report,
            "AO": self._on_position_ack,
            "AP": self._on_position_report,
        }

    # ---- the connector contract (actor thread) ----------------------------------------------

    def connect(self) -> None:
        """Start the initiator; the logon (``onLogon``) is the session coming up."""
        cfg = self.fix_config
        directory = self.state_dir / cfg.store_dir
        self._link = self.link
        self._books = L1Books(self.name)  # refilled by the new session's snapshots: nothing stale
        self._closing = False
        self._logout_text = ""
        if not self._journal_read:
            self._journal_read = True
            self._track_journal_orders()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            settings = self._settings(directory)
            self._application = _Application(self)
            # The initiator keeps references to these C++ objects: they must outlive it.
            self._keep = (settings, fix.FileStoreFactory(settings), fix.FileLogFactory(settings))
            self._initiator = fix.SocketInitiator(
                self._application, self._keep[1], settings, self._keep[2],
            )
            self._initiator.start()
        except (fix.ConfigError, fix.RuntimeError, OSError) as exc:
            self.disconnect()
            raise ConnectorError(f"cannot start the FIX session: {exc}", venue=self.name) from exc

    def timeout_reason(self) -> str:
        cfg = self.fix_config
        return f"no FIX logon at {cfg.host}:{cfg.port} within {cfg.connect_timeout_s}s"

    def disconnect(self) -> None:
        """Stop the initiator (its thread is joined) and free the session; idempotent."""
        self._closing = True
        initiator, self._initiator = self._initiator, None
        if initiator is not None:
            initiator.stop(True)
            del initiator  # the last reference: quickfix frees the session and its socket
        self._keep = ()
        self._application = None
        self._logged_on.clear()

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        table = super().handlers()
        table[FillBusted] = self._deliver_amendment
        table[FillCorrected] = self._deliver_amendment
        table[SessionUp] = self._on_up_then_probe
        table[_ProbeTick] = self._on_probe_tick
        table[_ProbeAnswer] = self._on_probe_answer
        for acknowledgement in (OrderAccepted, OrderFilled, OrderRejected, OrderCancelled):
            table[acknowledgement] = self._deliver_checking_delay
        return table

    def _deliver_amendment(self, message: FillBusted | FillCorrected) -> None:
        bus.publish(topics.ORDERS, message)

    def resync(self) -> None:
        """Ask for the status of every order that is not terminal (H), for the working
        orders (AF), then for the positions (AN)."""
        self._query_orders()
        request = self._new("AF")
        _set(request, (
            (Tag.MASS_STATUS_REQ_ID, self._next_id("ms")),
            (Tag.MASS_STATUS_REQ_TYPE, "7"),  # status of all orders
        ))  # fmt: skip
        self._send(request)
        self.request_positions("")

    def _query_orders(self) -> None:
        """One OrderStatusRequest (H) per order of this venue that is not terminal; the
        answers (ExecType=I) recover what happened while the session was down."""
        with self._state_lock:
            orders = list(self._orders.items())
            self._status_seen.clear()
        for coid, known in orders:
            request = self._new("H")
            _set(request, (
                (Tag.CL_ORD_ID, coid),
                (_ORD_STATUS_REQ_ID, None if self._legacy else self._next_id("st-")),
                (Tag.SYMBOL, known.symbol),
                (Tag.SIDE, known.side),
            ))  # fmt: skip
            if not self._send(request):
                self.log.error(f"connector {self.name}: status request for {coid} not sent")
        if orders:
            self.log.info(f"connector {self.name}: asked the status of {len(orders)} order(s)")

    def query_order_status(self, order: SubmitOrder) -> None:
        """OrderStatusRequest (H) for one order still unanswered; the ExecutionReport
        (ExecType=I) answering it is decoded like those of a resync."""
        request = self._new("H")
        _set(request, (
            (Tag.CL_ORD_ID, order.client_order_id),
            (_ORD_STATUS_REQ_ID, None if self._legacy else self._next_id("st-")),
            (Tag.SYMBOL, order.symbol),
            (Tag.SIDE, SIDE_CODES[order.side]),
        ))  # fmt: skip
        if not self._send(request):  # logged off: the logon's own queries will ask
            self.count_error()
            self.log.warning(f"connector {self.name}: status request for "
                             f"{order.client_order_id} not sent (not logged on)")

    def order_given_up(self, client_order_id: str) -> None:
        """Not asked about at the next logon: a late report of it is still published."""
        self._forget(client_order_id)

    def _track_journal_orders(self) -> None:
        """Track the journal's orders of this venue that are not terminal (read only; once
        per start): a restarted process still asks the venue about them."""
        path = self.state_dir / self.fix_config.journal
        if not path.is_file():
            return
        try:
            with Journal(path) as journal:  # only read: the keeper and governor write it
                records = journal.orders()
                fills = journal.fills()
        except JournalError as exc:
            self.count_error()
            self.log.error(f"connector {self.name}: cannot read the journal's orders: {exc}")
            return
        notional: dict[str, Decimal] = {}
        for fill in fills:
            if fill.venue == self.name:
                key = fill.client_order_id
                notional[key] = notional.get(key, _ZERO) + fill.quantity * fill.price
        tracked = 0
        with self._state_lock:
            for record in records:
                order = record.order
                if order.venue != self.name or record.status.is_done():
                    continue
                if order.client_order_id in self._orders:
                    continue
                self._orders[order.client_order_id] = _Order(
                    order.symbol, SIDE_CODES[order.side], format_decimal(order.quantity),
                    filled=record.filled_quantity,
                    notional=notional.get(order.client_order_id, _ZERO),
                )
                tracked += 1
        if tracked:
            self.log.info(f"connector {self.name}: {tracked} open order(s) from the journal")

    def subscribe(self, symbols: Sequence[str]) -> None:
        """One MarketDataRequest (snapshot + updates, top of book) per symbol."""
        if not self._logged_on.is_set():
            raise ConnectorError("cannot subscribe: FIX session not logged on", venue=self.name)
        for symbol in symbols:
            request = self._new("V")
            _set(request, (
                (Tag.MD_REQ_ID, self._next_id(f"md-{symbol}-")),
                (Tag.SUBSCRIPTION_REQUEST_TYPE, "1"),
                (Tag.MARKET_DEPTH, "1"),
                (Tag.MD_UPDATE_TYPE, "1"),
            ))  # fmt: skip
            for entry_type in ("0", "1"):
                group = fix.Group(Tag.NO_MD_ENTRY_TYPES, Tag.MD_ENTRY_TYPE)
                group.setField(Tag.MD_ENTRY_TYPE, entry_type)
                request.addGroup(group)
            group = fix.Group(Tag.NO_RELATED_SYM, Tag.SYMBOL)
            group.setField(Tag.SYMBOL, symbol)
            request.addGroup(group)
            self._send(request)

    def submit(self, order: SubmitOrder) -> None:
        """NewOrderSingle; refused at once when the session is not logged on or stale."""
        if not self._logged_on.is_set():
            self.deliver(self._refusal(order, "FIX session not logged on"))
            return
        if self._refused_stale(order):
            return
        message = self._new("D")
        _set(message, (
            (Tag.CL_ORD_ID, order.client_order_id),
            (Tag.HANDL_INST, "1"),
            (Tag.SYMBOL, order.symbol),
            (Tag.SIDE, SIDE_CODES[order.side]),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.ORDER_QTY, format_decimal(order.quantity)),
            (Tag.ORD_TYPE, ORD_TYPE_CODES[order.order_type]),
            (Tag.PRICE, format_decimal(order.limit_price) if order.limit_price is not None else None),
            (Tag.STOP_PX, format_decimal(order.stop_price) if order.stop_price is not None else None),
            (Tag.TIME_IN_FORCE, TIF_CODES[order.time_in_force]),
            (Tag.EXEC_INST, "E" if order.reduce_only else None),  # do not increase
        ))  # fmt: skip
        self._set_expiry(message, order)
        self._late.sent(order.client_order_id, now_ns())
        with self._state_lock:
            self._orders[order.client_order_id] = _Order(
                order.symbol, SIDE_CODES[order.side], format_decimal(order.quantity)
            )
        if not self._send(message):
            with self._state_lock:
                self._orders.pop(order.client_order_id, None)
            self.deliver(self._refusal(order, "FIX session refused the order"))

    def cancel(self, order: CancelOrder) -> None:
        """OrderCancelRequest for an order this session knows (sent or re-read at resync)."""
        with self._state_lock:
            known = self._orders.get(order.client_order_id)
        if known is None:
            self.count_error()
            self.log.warning(
                f"connector {self.name}: cancel of unknown order {order.client_order_id}"
            )
            return
        message = self._new("F")
        _set(message, (
            (Tag.ORIG_CL_ORD_ID, order.client_order_id),
            (Tag.CL_ORD_ID, self._next_id(f"{order.client_order_id}-cxl-")),
            (Tag.SYMBOL, known.symbol),
            (Tag.SIDE, known.side),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.ORDER_QTY, known.quantity),
        ))  # fmt: skip
        self._send(message)

    def cancel_all(self, request_id: str) -> None:
        """OrderMassCancelRequest for every order; the report becomes ``CancelAllDone``."""
        cl_ord_id = self._next_id("mc-")
        with self._state_lock:
            self._remember(self._mass_cancels, cl_ord_id, request_id)
        message = self._new("q")
        _set(message, (
            (Tag.CL_ORD_ID, cl_ord_id),
            (Tag.MASS_CANCEL_REQUEST_TYPE, "7"),  # all orders
            (Tag.TRANSACT_TIME, utc_timestamp()),
        ))  # fmt: skip
        if not self._send(message):
            self.log.error(f"connector {self.name}: mass cancel not sent (session down)")

    def request_positions(self, request_id: str) -> None:
        """OrderMassStatusRequest for the working orders, then RequestForPositions; the
        reports become one ``VenuePositions`` listing the working orders."""
        pos_req_id = self._next_id("pos-")
        with self._state_lock:
            self._remember(self._position_requests, pos_req_id, _PositionRequest(request_id))
        self._ask_working_orders(pos_req_id)
        message = self._new("AN")
        _set(message, (
            (Tag.POS_REQ_ID, pos_req_id),
            (Tag.POS_REQ_TYPE, "0"),  # positions
            (Tag.ACCOUNT, self._account),
            (Tag.ACCOUNT_TYPE, "1"),
            (Tag.CLEARING_BUSINESS_DATE, time.strftime("%Y%m%d", time.gmtime())),
            (Tag.TRANSACT_TIME, utc_timestamp()),
        ))  # fmt: skip
        if not self._send(message):
            self.log.error(f"connector {self.name}: position request not sent (session down)")

    # ---- sending (actor thread) -------------------------------------------------------------

    def _settings(self, directory: Path) -> fix.SessionSettings:
        cfg = self.fix_config
        values = {
            "ConnectionType": "initiator",
            "SocketConnectHost": cfg.host,
            "SocketConnectPort": str(cfg.port),
            "SocketNodelay": "Y",
            "HeartBtInt": str(cfg.heartbeat_s),
            # One TCP connection per attempt: the connector's backoff, not quickfix, decides
            # when to try again (and an initiator is never stopped with a connection pending).
            "ReconnectInterval": str(_RECONNECT_INTERVAL_S),
            "LogonTimeout": str(max(1, int(cfg.connect_timeout_s))),
            "FileStorePath": str(directory / "store"),
            "FileLogPath": str(directory / "log"),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            "NonStopSession": "Y",
            "ResetOnLogon": "Y" if cfg.reset_on_logon else "N",
            "PersistMessages": "Y",
            **dictionary_settings(cfg.begin_string, directory),
        }
        defaults = fix.Dictionary()
        for key, value in values.items():
            defaults.setString(key, value)
        settings = fix.SessionSettings()
        settings.set(defaults)
        settings.set(self.session_id, fix.Dictionary())
        return settings

    def _new(self, msg_type: str) -> fix.Message:
        message = fix.Message()
        wire = EXTENDED_42_TYPES.get(msg_type, msg_type) if self._legacy else msg_type
        message.getHeader().setField(Tag.MSG_TYPE, wire)
        return message

    def _send(self, message: fix.Message) -> bool:
        """Send on the session when logged on; False otherwise (nothing is queued)."""
        if not self._logged_on.is_set():
            return False
        try:
            return bool(fix.Session.sendToTarget(message, self.session_id))
        except fix.SessionNotFound:
            return False

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{time.time_ns():x}-{next(self._ids)}"

    def _refusal(self, order: SubmitOrder, text: str) -> OrderRejected:
        return OrderRejected(
            client_order_id=order.client_order_id, venue=self.name,
            reason=RejectReason.VENUE_DOWN, text=text, symbol=order.symbol,
            source=order.source, ts_ns=now_ns(),
        )  # fmt: skip

    @staticmethod
    def _remember(table: dict[_K, _V], key: _K, value: _V, bound: int = _MAX_PENDING) -> None:
        """Add to a table of unanswered requests, forgetting the oldest past the bound."""
        table[key] = value
        while len(table) > bound:
            del table[next(iter(table))]

    # ---- staleness, expiry, late acknowledgements (actor thread) ----------------------------

    def _on_up_then_probe(self, message: SessionUp) -> None:
        """The session is up: the base resynchronises; then the probing starts."""
        self._on_session_up(message)
        if self.phase == "up" and message.attempt == self.link.attempt:
            cfg = self.fix_config
            self._probe = SessionProbe(interval_s=cfg.probe_interval_s, timeout_s=cfg.probe_timeout_s,
                                       dead_after_s=cfg.stale_after_s, now=time.monotonic())
            self._on_probe_tick(_ProbeTick(message.attempt))

    def _on_probe_tick(self, tick: _ProbeTick) -> None:
        """Send a TestRequest when one is due; declare the session dead after
        ``stale_after_s`` without an answer."""
        probe = self._probe
        if tick.attempt != self.link.attempt:
            return  # a tick of an earlier session
        if probe is None or self.phase != "up":
            self._probe = None
            return
        now = time.monotonic()
        state = probe.state(now)
        if state is Liveness.DEAD:
            self._declare_dead(f"no answer to TestRequest for {probe.silent_s(now):.1f}s "
                               f"(stale_after_s {self.fix_config.stale_after_s})")
            return
        if state is Liveness.STALE:
            self._note_stale(now)
        if probe.probe_due(now):
            probe.sent(now)
            test_req_id = f"{_PROBE_PREFIX}{self.link.attempt}-{next(self._probe_ids)}"
            self._remember(self._probes_sent, test_req_id, now, bound=64)
            self._send_test_request(test_req_id)
        delay = min(_PROBE_TICK_S, probe.next_probe_in(now) or probe.interval_s)
        self._probe_timer = scheduler.call_later(delay, self._teller(tick))

    def _teller(self, message: object) -> Callable[[], None]:
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(message)
            except Exception:  # the actor is gone: nothing to probe
                pass

        return tell

    def _send_test_request(self, test_req_id: str) -> None:
        """A TestRequest (35=1): the venue must answer with a Heartbeat echoing TestReqID."""
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "1")
        message.setField(Tag.TEST_REQ_ID, test_req_id)
        if not self._send(message):
            self.log.debug(f"connector {self.name}: TestRequest {test_req_id} not sent")

    def _on_heartbeat(self, message: fix.Message) -> None:
        """A Heartbeat (quickfix thread): one answering our TestRequest goes to the actor."""
        test_req_id = _get(message, Tag.TEST_REQ_ID) or ""
        if test_req_id.startswith(_PROBE_PREFIX):
            self._link.tell(_ProbeAnswer(test_req_id, time.monotonic()))

    def _on_probe_answer(self, answer: _ProbeAnswer) -> None:
        probe = self._probe
        if probe is None or not answer.test_req_id.startswith(f"{_PROBE_PREFIX}{self.link.attempt}-"):
            return
        sent = self._probes_sent.pop(answer.test_req_id, None)
        if sent is not None:
            self.note_latency((answer.at - sent) * 1000.0)  # the session's round trip
        stale_s = probe.answered(answer.at)
        if stale_s is not None:
            self.log.warning(f"connector {self.name}: FIX session answers again after "
                             f"{stale_s:.1f}s stale")

    def _note_stale(self, now: float) -> None:
        probe = self._probe
        if probe is not None and probe.note(now):
            self.log.warning(f"connector {self.name}: FIX session stale: no answer to TestRequest "
                             f"for {probe.silent_s(now):.1f}s; new orders are refused")

    def _refused_stale(self, order: SubmitOrder) -> bool:
        """Refuse ``order`` (``VENUE_DOWN``) when a probe is overdue: nothing new is written to
        a session that may deliver it much later."""
        probe = self._probe
        now = time.monotonic()
        if probe is None or probe.takes_orders(now):
            return False
        self._note_stale(now)
        self.deliver(self._refusal(order, f"FIX session stale: no answer to TestRequest for "
                                          f"{probe.silent_s(now):.1f}s"))
        return True

    def _declare_dead(self, reason: str) -> None:
        """Close the silent session abortively and reconnect: ``SO_LINGER`` 0 on its socket
        makes quickfix's close a reset that drops the bytes the kernel has not sent yet."""
        self.log.warning(f"connector {self.name}: FIX session declared dead: {reason}")
        self._probe = None
        self._linger_zero()
        self._lose_session(reason)

    def _linger_zero(self) -> None:
        """``SO_LINGER`` 0 on the session's socket: quickfix offers no option for it, so
        the socket is found by its peer, the venue's address."""
        cfg = self.fix_config
        linger_zero(cfg.host, cfg.port, self.log, f"connector {self.name}")

    def _set_expiry(self, message: fix.Message, order: SubmitOrder) -> None:
        """With ``order_expiry_s`` set, a resting limit order goes TimeInForce GTD with an
        ExpireTime that long after now."""
        expires_ns = expire_time_ns(now_ns(), self.fix_config.order_expiry_s)
        if expires_ns is None or not takes_gtd(order):
            return
        message.setField(Tag.TIME_IN_FORCE, GTD)
        message.setField(Tag.EXPIRE_TIME, utc_timestamp(expires_ns))

    def _deliver_checking_delay(
        self, message: OrderAccepted | OrderFilled | OrderRejected | OrderCancelled
    ) -> None:
        """Publish an order event; the first acknowledgement (accepted or filled) of an order
        later than ``late_ack_warn_s`` after its sending raises a WARNING naming both."""
        self.deliver_checking_delay(self._late, message)

    # ---- quickfix callbacks (quickfix thread) -----------------------------------------------

    def _guard(self, where: str, handler: Callable[..., None], *args: object) -> None:
        """Run a callback body; an exception is logged and counted, never raised."""
        try:
            handler(*args)
        except BaseException as exc:  # an exception escaping into quickfix ends the process
            self.count_error()
            self.log.exception(f"connector {self.name}: {where} failed: {exc!r}")

    def _on_logon(self) -> None:
        self._logged_on.set()
        self.log.info(f"connector {self.name}: logged on as {self.session_id}")
        self._link.up()

    def _on_logout(self) -> None:
        was_logged_on = self._logged_on.is_set()
        self._logged_on.clear()
        if self._closing:
            return
        if was_logged_on:
            reason = f"logout: {self._logout_text}" if self._logout_text else "disconnected"
            self._link.lost(reason)
        elif self._logout_text:  # the venue answered our Logon with a Logout
            self._link.lost(f"logon refused: {self._logout_text}")

    def _on_outgoing_admin(self, message: fix.Message) -> None:
        if message.getHeader().getField(Tag.MSG_TYPE) == "3":
            # quickfix refused a venue message (bad value, missing field...): it is garbage
            detail = (
                f"session reject of seq {_get(message, Tag.REF_SEQ_NUM)} "
                f"tag {_get(message, Tag.REF_TAG_ID)}: {_get(message, Tag.TEXT)}"
            )
            self.count_malformed(detail)

    def _on_incoming_admin(self, message: fix.Message) -> None:
        msg_type = message.getHeader().getField(Tag.MSG_TYPE)
        if msg_type == "0":
            self._on_heartbeat(message)
        elif msg_type == "5":
            self._logout_text = _get(message, Tag.TEXT) or ""
        elif msg_type == "3":
            self.count_error()
            ref_seq = _get(message, Tag.REF_SEQ_NUM)
            text = _get(message, Tag.TEXT) or ""
            self.log.warning(f"connector {self.name}: venue rejected our seq {ref_seq}: {text}")
            ref_type = _get(message, Tag.REF_MSG_TYPE)
            with self._state_lock:
                coid = self._sent_orders.pop(int(ref_seq), None) if ref_seq else None
            if coid is not None and ref_type in (None, "D"):
                self._end_rejected(coid, f"session reject: {text}")

    def _on_outgoing_app(self, message: fix.Message) -> None:
        """Remember which sequence number carried which NewOrderSingle (for a 35=3)."""
        header = message.getHeader()
        if header.getField(Tag.MSG_TYPE) != "D" or not header.isSetField(Tag.MSG_SEQ_NUM):
            return
        seq = int(header.getField(Tag.MSG_SEQ_NUM))
        with self._state_lock:
            self._remember(self._sent_orders, seq, message.getField(Tag.CL_ORD_ID), _MAX_SENT)

    def _end_rejected(self, coid: str, text: str) -> None:
        """End an order the venue refused before it reached the book."""
        with self._state_lock:
            known = self._orders.pop(coid, None)
        self.log.warning(f"connector {self.name}: order {coid} refused: {text}")
        self._link.tell(OrderRejected(
            client_order_id=coid, venue=self.name, reason=RejectReason.VENUE, text=text,
            symbol=known.symbol if known is not None else "", ts_ns=now_ns(),
        ))  # fmt: skip

    def _on_message(self, message: fix.Message) -> None:
        wire_type = message.getHeader().getField(Tag.MSG_TYPE)
        msg_type = wire_type
        if self._legacy:
            msg_type = next((k for k, v in EXTENDED_42_TYPES.items() if v == wire_type), wire_type)
        handler = self._handlers.get(msg_type)
        try:
            if handler is None:
                raise ValueError(f"unexpected message type {wire_type}")
            handler(message)
        except (ValueError, KeyError, InvalidOperation, fix.FieldNotFound) as exc:
            raw = message.toString().replace("\x01", "|")
            self.count_malformed(f"{type(exc).__name__}: {exc}: {raw}")

    # ---- decoding (quickfix thread) -----------------------------------------------------------

    def _on_execution_report(self, message: fix.Message) -> None:
        exec_type = message.getField(Tag.EXEC_TYPE)
        status = message.getField(Tag.ORD_STATUS)
        trans_type = _get(message, Tag.EXEC_TRANS_TYPE)
        coid = message.getField(Tag.CL_ORD_ID) if message.isSetField(Tag.CL_ORD_ID) else ""
        symbol = _get(message, Tag.SYMBOL) or ""
        order_id = _get(message, Tag.ORDER_ID) or ""
        text = _get(message, Tag.TEXT) or ""
        ts = _timestamp_ns(_get(message, Tag.TRANSACT_TIME)) or now_ns()
        if exec_type in ("G", "H") or trans_type in ("1", "2"):
            corrected = exec_type == "G" if trans_type not in ("1", "2") else trans_type == "2"
            self._on_amendment(message, coid, symbol, order_id, text, ts, corrected=corrected)
            return
        if exec_type == "I" or trans_type == "3":  # order status (resync)
            listed = self._note_listed(message, coid, status)
            self._on_order_status(message, coid, status, symbol, order_id, ts, listing=listed)
            return
        if exec_type == "F" or (self._legacy and exec_type in ("1", "2")):
            side = SIDES.get(message.getField(Tag.SIDE))
            if side is None:
                raise ValueError(f"unsupported Side {message.getField(Tag.SIDE)}")
            fill = OrderFilled(
                client_order_id=coid, venue=self.name, fill_id=message.getField(Tag.EXEC_ID),
                symbol=symbol, side=side, quantity=_decimal(message, Tag.LAST_QTY),
                price=_decimal(message, Tag.LAST_PX),
                leaves_quantity=_decimal(message, Tag.LEAVES_QTY), venue_order_id=order_id,
                ts_ns=ts,
            )  # fmt: skip
            cum = _decimal(message, Tag.CUM_QTY) if message.isSetField(Tag.CUM_QTY) else None
            with self._state_lock:
                known = self._orders.get(coid)
                counted = known is not None and cum is not None and cum <= known.filled
                if known is not None and not counted:
                    known.filled += fill.quantity
                    known.notional += fill.quantity * fill.price
                if not fill.leaves_quantity:
                    self._orders.pop(coid, None)
            if counted:  # already published, inferred from an order status: never twice
                self.count_drop()
                self.log.warning(
                    f"connector {self.name}: fill {fill.fill_id} of {coid} (CumQty {cum}) "
                    "already counted from the order status; not published again"
                )
                return
            self._link.tell(fill)
        elif exec_type == "0":
            self._link.tell(OrderAccepted(
                client_order_id=coid, venue=self.name, symbol=symbol,
                venue_order_id=order_id, ts_ns=ts,
            ))  # fmt: skip
        elif exec_type == "8":
            code = _get(message, Tag.ORD_REJ_REASON)
            self._forget(coid)
            self._link.tell(OrderRejected(
                client_order_id=coid, venue=self.name,
                reason=_REJECT_REASONS.get(code or "", RejectReason.VENUE),
                text=f"OrdRejReason {code}: {text}" if code is not None else text,
                symbol=symbol, ts_ns=ts,
            ))  # fmt: skip
        elif exec_type in ("4", "C"):  # canceled, expired (its time in force ran out)
            cancelled = _get(message, Tag.ORIG_CL_ORD_ID) or coid
            self._forget(cancelled)
            self._link.tell(OrderCancelled(
                client_order_id=cancelled, venue=self.name, symbol=symbol, text=text, ts_ns=ts,
                expired=exec_type == "C" or status == "C",
            ))  # fmt: skip
        else:
            self.log.debug(f"connector {self.name}: ExecType {exec_type} for {coid} ignored")

    def _on_order_status(
        self, message: fix.Message, coid: str, status: str, symbol: str, order_id: str, ts: int,
        *, listing: bool = False,
    ) -> None:
        """An order status report (ExecType=I), answering H or AF.

        CumQty ahead of what was published becomes one inferred fill for the difference;
        a terminal OrdStatus ends the order; an order unknown to the venue is rejected. A
        working order is acknowledged (``OrderAccepted``) once per session by the answers to
        the logon's requests and the in-flight queries, never by a ``listing`` (the
        periodic list of working orders sent with each positions request)."""
        cum = _decimal(message, Tag.CUM_QTY, "0")
        avg = _decimal(message, Tag.AVG_PX, "0")
        text = _get(message, Tag.TEXT) or ""
        events: list[Any] = []
        with self._state_lock:
            known = self._orders.get(coid)
            if known is None:
                if status not in _WORKING:
                    self.log.debug(f"connector {self.name}: status {status} of {coid} ignored")
                    return
                # An order this process did not track: its published fills are unknown,
                # so the venue's figures are the baseline (nothing inferred).
                known = self._orders[coid] = _Order(
                    symbol, message.getField(Tag.SIDE),
                    format_decimal(_decimal(message, Tag.ORDER_QTY, "0")),
                    filled=cum, notional=cum * avg,
                )  # fmt: skip
            symbol = symbol if symbol and symbol != "N/A" else known.symbol
            inferred = self._infer_fill(known, message, coid, symbol, order_id, cum, avg, ts)
            if inferred is not None:
                events.append(inferred)
            elif cum < known.filled:
                self.count_error()
                self.log.warning(
                    f"connector {self.name}: venue reports CumQty {cum} for {coid}, "
                    f"{known.filled} published as filled"
                )
            if status not in _WORKING:
                del self._orders[coid]
            repeated = listing or coid in self._status_seen  # answered both H and AF: accepted once
            if not listing:
                self._status_seen.add(coid)
        if status in _WORKING and not repeated:
            events.append(OrderAccepted(
                client_order_id=coid, venue=self.name, symbol=symbol, venue_order_id=order_id,
                ts_ns=ts,
            ))  # fmt: skip
        elif status in _ENDED:
            events.append(OrderCancelled(
                client_order_id=coid, venue=self.name, symbol=symbol,
                text=text or f"{_ENDED[status]} (order status)", ts_ns=ts, expired=status == "C",
            ))  # fmt: skip
        elif status == "8":
            code = _get(message, Tag.ORD_REJ_REASON)
            if code == _UNKNOWN_ORDER:
                detail = (f"order {coid} unknown to the venue (lost in flight): resolved as "
                          f"rejected")
                self.log.warning(f"connector {self.name}: {detail}")
                events.append(SafetyEvent(
                    kind="order_lost", severity=Severity.WARNING, detail=detail,
                    venue=self.name, symbol=symbol, ts_ns=now_ns(),
                ))  # fmt: skip
                text = f"unknown to the venue: {text}" if text else "unknown to the venue"
            events.append(OrderRejected(
                client_order_id=coid, venue=self.name,
                reason=_REJECT_REASONS.get(code or "", RejectReason.VENUE),
                text=f"OrdRejReason {code}: {text}" if code is not None else text,
                symbol=symbol, ts_ns=ts,
            ))  # fmt: skip
        # OrdStatus 2 (filled): the fills, inferred or not, already end the order.
        for event in events:
            self._link.tell(event)

    def _infer_fill(
        self, known: _Order, message: fix.Message, coid: str, symbol: str, order_id: str,
        cum: Decimal, avg: Decimal, ts: int,
    ) -> OrderFilled | None:
        """The fill the venue's CumQty/AvgPx imply beyond those published (caller holds the
        state lock); ``None`` when nothing is missing."""
        missing = cum - known.filled
        if missing <= 0:
            return None
        price = (cum * avg - known.notional) / missing
        if price <= 0 or price.adjusted() >= PRICE_BOUNDS[0].adjusted():
            price = avg  # the known fills disagree with AvgPx: take the venue's average
        price = price.quantize(_PRICE_STEP).normalize()
        side = SIDES.get(message.getField(Tag.SIDE)) or SIDES.get(known.side)
        if side is None:
            raise ValueError(f"unsupported Side {message.getField(Tag.SIDE)}")
        order_qty = _decimal(message, Tag.ORDER_QTY, known.quantity)
        fill = OrderFilled(
            client_order_id=coid, venue=self.name,
            fill_id=f"inferred:{coid}:{format_decimal(cum)}", symbol=symbol, side=side,
            quantity=missing, price=price, leaves_quantity=max(order_qty - cum, _ZERO),
            venue_order_id=order_id, ts_ns=ts, inferred=True,
        )  # fmt: skip
        known.filled, known.notional = cum, cum * avg
        self.log.warning(
            f"connector {self.name}: {coid}: venue CumQty {cum} AvgPx {avg} ahead of the "
            f"fills published; inferred fill {fill.fill_id} of {missing} at {price}"
        )
        return fill

    def _on_amendment(
        self, message: fix.Message, coid: str, symbol: str, order_id: str, text: str, ts: int,
        *, corrected: bool,
    ) -> None:
        """A trade bust (ExecType=H) or correction (G): the message the keeper applies, and
        a WARNING."""
        side = SIDES.get(message.getField(Tag.SIDE))
        if side is None:
            raise ValueError(f"unsupported Side {message.getField(Tag.SIDE)}")
        original = message.getField(_EXEC_REF_ID)
        cum = _decimal(message, Tag.CUM_QTY, "0")
        avg = _decimal(message, Tag.AVG_PX, "0")
        common: dict[str, Any] = {
            "client_order_id": coid, "venue": self.name, "fill_id": original,
            "symbol": symbol, "side": side, "quantity": _decimal(message, Tag.LAST_QTY),
            "price": _decimal(message, Tag.LAST_PX), "cumulative_quantity": cum,
            "average_price": avg, "venue_order_id": order_id, "text": text, "ts_ns": ts,
        }  # fmt: skip
        exec_id = message.getField(Tag.EXEC_ID)
        amendment: FillBusted | FillCorrected
        if corrected:
            amendment = FillCorrected(correction_id=exec_id, **common)
            what = f"trade {original} of {coid} corrected to {amendment.quantity} at {amendment.price}"
        else:
            amendment = FillBusted(bust_id=exec_id, **common)
            what = f"trade {original} of {coid} ({amendment.quantity} at {amendment.price}) busted"
        with self._state_lock:
            known = self._orders.get(coid)
            if known is not None:  # the venue's figures are the truth from now on
                known.filled, known.notional = cum, cum * avg
        self.log.warning(f"connector {self.name}: {what} (venue exec id {exec_id})")
        self._link.tell(amendment)
        self._link.tell(SafetyEvent(
            kind="trade_correction" if corrected else "trade_bust", severity=Severity.WARNING,
            detail=what, venue=self.name, symbol=symbol, ts_ns=now_ns(),
        ))  # fmt: skip

    def _forget(self, coid: str) -> None:
        with self._state_lock:
            self._orders.pop(coid, None)

    def _on_cancel_reject(self, message: fix.Message) -> None:
        self.count_error()
        self.log.warning(
            f"connector {self.name}: cancel of {_get(message, Tag.ORIG_CL_ORD_ID)} refused "
            f"(CxlRejReason {_get(message, Tag.CXL_REJ_REASON)}): {_get(message, Tag.TEXT)}"
        )

    def _on_snapshot(self, message: fix.Message) -> None:
        sent_ns = _timestamp_ns(_get(message.getHeader(), Tag.SENDING_TIME))
        book = self._books.book(message.getField(Tag.SYMBOL))
        for entry in _groups(message, Tag.NO_MD_ENTRIES, Tag.MD_ENTRY_TYPE):
            self._apply(book, entry, sent_ns)
        self._publish(sent_ns)

    def _on_incremental(self, message: fix.Message) -> None:
        sent_ns = _timestamp_ns(_get(message.getHeader(), Tag.SENDING_TIME))
        for entry in _groups(message, Tag.NO_MD_ENTRIES, Tag.MD_UPDATE_ACTION):
            book = self._books.book(entry.getField(Tag.SYMBOL))
            if entry.getField(Tag.MD_UPDATE_ACTION) == "2":  # delete: no quote until refilled
                entry_type = _get(entry, Tag.MD_ENTRY_TYPE)
                if entry_type == "0":
                    book.clear_bid(sent_ns)
                elif entry_type == "1":
                    book.clear_ask(sent_ns)
                continue
            self._apply(book, entry, sent_ns)
        self._publish(sent_ns)

    @staticmethod
    def _apply(book: L1Book, entry: fix.Group, sent_ns: int) -> None:
        entry_type = entry.getField(Tag.MD_ENTRY_TYPE)
        price = _decimal(entry, Tag.MD_ENTRY_PX)
        size = _decimal(entry, Tag.MD_ENTRY_SIZE, "0")
        if entry_type == "0":
            book.set_bid(price, size, sent_ns)
        elif entry_type == "1":
            book.set_ask(price, size, sent_ns)

    def _publish(self, sent_ns: int) -> None:
        """One ``QuoteBatch`` with the top of every book this message changed."""
        recv_ns = now_ns()
        quotes = self._books.take(recv_ns)
        if quotes:
            if sent_ns and recv_ns >= sent_ns:
                self.note_latency((recv_ns - sent_ns) / 1e6)
            self._link.tell(QuoteBatch(venue=self.name, quotes=tuple(quotes), recv_ns=recv_ns))

    def _on_market_data_reject(self, message: fix.Message) -> None:
        self.count_error()
        self.log.warning(
            f"connector {self.name}: market data request {_get(message, Tag.MD_REQ_ID)} "
            f"refused: {_get(message, Tag.TEXT)}"
        )

    def _on_business_reject(self, message: fix.Message) -> None:
        self.count_error()
        ref_type = _get(message, Tag.REF_MSG_TYPE)
        text = _get(message, Tag.TEXT) or ""
        self.log.warning(f"connector {self.name}: venue refused {ref_type}: {text}")
        self._refuse_listings(ref_type)
        ref_id = _get(message, _BUSINESS_REJECT_REF_ID)
        if ref_type == "D" and ref_id:
            reason = _get(message, Tag.BUSINESS_REJECT_REASON)
            self._end_rejected(ref_id, f"BusinessRejectReason {reason}: {text}")

    def _on_mass_cancel_report(self, message: fix.Message) -> None:
        with self._state_lock:
            request_id = self._mass_cancels.pop(message.getField(Tag.CL_ORD_ID), None)
        if message.getField(Tag.MASS_CANCEL_RESPONSE) == "0":
            self.count_error()
            self.log.error(
                f"connector {self.name}: mass cancel refused: {_get(message, Tag.TEXT)}"
            )
            return
        if request_id is None:
            raise ValueError("mass cancel report for an unknown request")
        self._link.tell(CancelAllDone(venue=self.name, request_id=request_id, ts_ns=now_ns()))

    def _on_position_ack(self, message: fix.Message) -> None:
        pos_req_id = message.getField(Tag.POS_REQ_ID)
        result = message.getField(Tag.POS_REQ_RESULT)
        with self._state_lock:
            request = self._position_requests.get(pos_req_id)
            if request is None:
                raise ValueError(f"position ack for unknown request {pos_req_id}")
            if result not in ("0", "2"):  # neither valid nor "no positions"
                del self._position_requests[pos_req_id]
            else:
                request.expected = 0 if result == "2" else int(
                    _get(message, Tag.TOTAL_NUM_POS_REPORTS) or 0
                )
        if result not in ("0", "2"):
            self.count_error()
            self.log.error(
                f"connector {self.name}: position request refused ({result}): "
                f"{_get(message, Tag.TEXT)}"
            )
            return
        self._complete_positions(pos_req_id)

    def _on_position_report(self, message: fix.Message) -> None:
        pos_req_id = message.getField(Tag.POS_REQ_ID)
        quantity = Decimal(0)
        for entry in _groups(message, Tag.NO_POSITIONS, Tag.POS_TYPE):
            quantity += _decimal(entry, Tag.LONG_QTY, "0") - _decimal(entry, Tag.SHORT_QTY, "0")
        position = VenuePosition(
            venue=self.name, symbol=message.getField(Tag.SYMBOL), quantity=quantity,
            average_price=abs(_decimal(message, Tag.SETTL_PRICE, "0")),
        )  # fmt: skip
        total = _get(message, Tag.TOTAL_NUM_POS_REPORTS)
        with self._state_lock:
            request = self._position_requests.get(pos_req_id)
            if request is None:
                raise ValueError(f"position report for unknown request {pos_req_id}")
            request.received += 1
            if quantity:
                request.positions.append(position)
            if request.expected is None and total is not None:
                request.expected = int(total)
        self._complete_positions(pos_req_id)

    def _complete_positions(self, pos_req_id: str) -> None:
        with self._state_lock:
            request = self._position_requests.get(pos_req_id)
            if request is None or request.expected is None:
                return
            if request.received < request.expected:
                return
            del self._position_requests[pos_req_id]
        self._link.tell(VenuePositions(
            venue=self.name, positions=tuple(request.positions), request_id=request.request_id,
            ts_ns=now_ns(), open_orders=self._listed_orders(pos_req_id),
        ))  # fmt: skip

    # ---- the venue's working orders, with each positions report --------------------------

    def _ask_working_orders(self, pos_req_id: str) -> None:
        """An OrderMassStatusRequest (AF, all orders) whose ExecutionReports (ExecType=I,
        carrying its MassStatusReqID) list the venue's working orders for the positions
        request ``pos_req_id`` (actor thread). The reports also go through the order status
        handling, as every ExecType=I does."""
        mass_id = self._next_id("oo-")
        with self._state_lock:
            self._remember(self._listings, mass_id, _OrderListing(pos_req_id))
        request = self._new("AF")
        _set(request, (
            (Tag.MASS_STATUS_REQ_ID, mass_id),
            (Tag.MASS_STATUS_REQ_TYPE, "7"),  # status of all orders
        ))  # fmt: skip
        self._send(request)

    def _note_listed(self, message: fix.Message, coid: str, status: str) -> bool:
        """An ExecutionReport answering one of our listings: note the order if it works
        (quickfix thread) and say True; the order status handling then publishes no
        acknowledgement for it (it reports a working order, the connector's concern is the
        list), and an answer to a status request of the same session still does."""
        mass_id = _get(message, Tag.MASS_STATUS_REQ_ID)
        if mass_id is None:
            return False
        with self._state_lock:
            listing = self._listings.get(mass_id)
            if listing is None:
                return False
            # A pending cancel may name the cancel's ClOrdID: the order is its OrigClOrdID.
            coid = _get(message, Tag.ORIG_CL_ORD_ID) or coid
            if status in _WORKING and coid:
                listing.working.add(coid)
            if _get(message, Tag.LAST_RPT_REQUESTED) == "Y":
                listing.complete = True
        return True

    def _refuse_listings(self, ref_type: str | None) -> None:
        """The venue refused an AF (BusinessMessageReject): no listing under way can be
        trusted (quickfix thread)."""
        if ref_type not in ("AF", EXTENDED_42_TYPES["AF"]):
            return
        with self._state_lock:
            for listing in self._listings.values():
                listing.refused = True

    def _listed_orders(self, pos_req_id: str) -> tuple[str, ...] | None:
        """The working orders listed for ``pos_req_id``, once its positions are complete
        (quickfix thread). The venue answers a session's requests in order, so the AF sent
        before the AN has been answered by now: with its last report (LastRptRequested=Y),
        or with nothing when no order works. None when the AF was refused, or its reports
        stopped before the last one: the orders are then not compared."""
        with self._state_lock:
            found = [(mass_id, listing) for mass_id, listing in self._listings.items()
                     if listing.pos_req_id == pos_req_id]
            for mass_id, _listing in found:
                del self._listings[mass_id]
        if not found:
            return None
        listing = found[0][1]
        if listing.refused or (listing.working and not listing.complete):
            return None
        return tuple(sorted(listing.working))
