"""The FIX order-entry gateway: a quickfix acceptor through which outside order sources
trade, every order passing the session's own limits and then the risk governor.

- Logon (A) must carry the session's Username (553) and Password (554); a wrong or
  missing one is answered by a Logout and the connection is dropped (quickfix's
  ``RejectLogon``). A SenderCompID that is not configured is refused by quickfix itself.
- NewOrderSingle (D) -> the session's limits (``core.order_entry.SessionBook``), then a
  ``SubmitOrder`` to the risk governor with ``source = "fix:<SenderCompID>"``, routed to
  ExDestination (100) or the session's default venue. ExecutionReports (8) follow every
  state change: New, Trade (with LastQty/LastPx/CumQty/LeavesQty/AvgPx), Canceled, and
  Rejected (ExecType 8, Text ``<reason code>: <words>``) whether the session's limits,
  the governor or the venue refused.
- OrderCancelRequest (F) -> a cancel at the venue; Canceled, or OrderCancelReject (9).
- OrderCancelReplaceRequest (G) -> cancel-then-new (no connector modifies an order in
  place): the replacement passes the session's limits as a new order of the new quantity;
  Pending Replace (ExecType E), the original cancelled at the venue, then the replacement
  for the new quantity less what the original filled through the governor and, once the
  venue accepts it, Replaced (ExecType 5); OrderCancelReject (9, CxlRejResponseTo 2) when
  it cannot be done (unknown, done or filled first, a limit, the replacement refused).
- OrderMassCancelRequest (q) -> a cancel of each of the session's own working orders
  (all, or one symbol), then OrderMassCancelReport (r). Nothing of other sources is touched.
- Every other application message -> BusinessMessageReject (j) with reason 3 (unsupported
  message type).
- An operator's flatten of a session's source (``tradeguard flatten --source fix:<SenderCompID>``)
  closes its share with orders of source ``flatten:fix:<SenderCompID>``; their fills count
  in the session's positions, so its ``max_position`` sees what is left.
- Cancel-on-disconnect: when a session drops (Logout, TCP loss, missed heartbeats; quickfix
  calls ``onLogout`` for each), its working orders are cancelled at their venues.

quickfix calls the application on its own threads; each callback copies what it needs
and tells the actor, so the actor's mailbox serializes all state. No callback lets an
exception other than quickfix's own ``RejectLogon`` escape (the bindings end the process).
No message log is written: the Logon carries a password.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec
import pykka
import quickfix as fix
from loguru import logger

from actors import topics
from actors.order_entry._quickfix import dictionary_settings, listen_on_host, native_accept_host, spare_port
from actors.order_entry.config import FixGatewayConfig, FixSessionConfig
from actors.order_entry.protocol import GatewayState, GetGatewayState
from core.flatten import closing_source
from core.order_entry import (
    CancelReject,
    CxlRejReason,
    CxlRejResponseTo,
    EntryOrder,
    ExecReport,
    Outcome,
    SessionBook,
    SessionLimits,
    credentials_match,
)
from messages import (
    CancelOrder,
    MessageError,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    QuoteBatch,
    RejectReason,
    SubmitOrder,
    now_ns,
)
from messages.fix_spec import ORD_TYPES, SIDE_CODES, SIDES, TIFS, Tag, format_decimal, utc_timestamp
from supervision import SupervisedActor, bus, registry

__all__ = ["FixGateway"]

_USERNAME = 553
_PASSWORD = 554
_EX_DESTINATION = 100
_BUSINESS_REJECT_REF_ID = 379
_ORD_REJ_OTHER = "99"
_log = logger.bind(channel="main", component="fix_gateway")


class _Inbound(msgspec.Struct, frozen=True):
    """Tell (quickfix thread): one application message from a session."""

    sender: str
    msg_type: str
    seq: str
    fields: dict[int, str]


class _SessionUp(msgspec.Struct, frozen=True):
    sender: str


class _SessionDown(msgspec.Struct, frozen=True):
    sender: str


class _BadRequest(ValueError):
    """An application message the gateway cannot act on."""


class _Application(fix.Application):  # type: ignore[misc]
    """quickfix callbacks: copy, check credentials, hand over; never raise (but RejectLogon)."""

    def __init__(self, gateway: _Bridge) -> None:
        super().__init__()
        self.gateway = gateway

    def onCreate(self, session_id: fix.SessionID) -> None:
        """A session object exists."""

    def onLogon(self, session_id: fix.SessionID) -> None:
        """The client logged on (its credentials were checked in ``fromAdmin``)."""
        self.gateway.guard(lambda: self.gateway.tell(_SessionUp(session_id.getTargetCompID().getValue())))

    def onLogout(self, session_id: fix.SessionID) -> None:
        """The session ended: logout, lost connection or missed heartbeats."""
        self.gateway.guard(lambda: self.gateway.tell(_SessionDown(session_id.getTargetCompID().getValue())))

    def toAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Outgoing session message: nothing to add."""

    def fromAdmin(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Incoming session message: a Logon must carry the session's credentials."""
        refused = False
        try:
            if message.getHeader().getField(Tag.MSG_TYPE) == "A":
                refused = not self.gateway.logon_allowed(session_id.getTargetCompID().getValue(),
                                                         _get(message, _USERNAME), _get(message, _PASSWORD))
        except Exception:
            self.gateway.callback_errors += 1
            _log.exception("fix gateway: fromAdmin failed")
            refused = True
        if refused:
            raise fix.RejectLogon("invalid credentials")

    def toApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Outgoing application message: nothing to add."""

    def fromApp(self, message: fix.Message, session_id: fix.SessionID) -> None:
        """Incoming application message: copied and handed to the actor."""
        def hand_over() -> None:
            header = message.getHeader()
            fields: dict[int, str] = {}
            for tag in _BODY_TAGS:
                value = _get(message, tag)
                if value is not None:
                    fields[tag] = value
            self.gateway.tell(_Inbound(
                sender=session_id.getTargetCompID().getValue(),
                msg_type=header.getField(Tag.MSG_TYPE),
                seq=_get(header, Tag.MSG_SEQ_NUM) or "0",
                fields=fields,
            ))
        self.gateway.guard(hand_over)


_BODY_TAGS = (
    Tag.CL_ORD_ID, Tag.ORIG_CL_ORD_ID, Tag.SYMBOL, Tag.SIDE, Tag.ORDER_QTY, Tag.ORD_TYPE,
    Tag.PRICE, Tag.STOP_PX, Tag.TIME_IN_FORCE, Tag.EXEC_INST, Tag.MASS_CANCEL_REQUEST_TYPE,
    _EX_DESTINATION,
)


def _get(fields: fix.FieldMap, tag: int) -> str | None:
    return fields.getField(int(tag)) if fields.isSetField(int(tag)) else None


class _Bridge:
    """What the quickfix threads may touch: the credentials (read-only) and the actor's
    address. Shared by the callbacks; holds no trading state."""

    def __init__(self, tell: Callable[[Any], None],
                 credentials: Mapping[str, tuple[str, str | None]]) -> None:
        self._tell = tell
        self._credentials = dict(credentials)
        self._lock = threading.Lock()
        self.refused_logons = 0
        self.callback_errors = 0

    def tell(self, message: Any) -> None:
        self._tell(message)

    def logon_allowed(self, sender: str, user: str | None, password: str | None) -> bool:
        expected = self._credentials.get(sender)
        allowed = expected is not None and credentials_match(expected[0], expected[1], user, password)
        if not allowed:
            with self._lock:
                self.refused_logons += 1
            logger.bind(channel="governance").warning(
                f"fix gateway: logon refused for {sender!r}: invalid credentials")
        return allowed

    def guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException:  # an exception escaping into quickfix ends the process
            with self._lock:
                self.callback_errors += 1
            _log.exception("fix gateway: callback failed")


class FixGateway(SupervisedActor):
    """Accepts FIX order-entry sessions and carries their orders through tradeguard."""

    def __init__(self, config: FixGatewayConfig, state_dir: Path,
                 venues: Mapping[str, tuple[str, ...]], *,
                 clock: Callable[[], float] = time.monotonic,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.state_dir = Path(state_dir) / "order_entry"
        self.venues = dict(venues)
        self.clock = clock
        self._environ = environ
        self._sessions: dict[str, FixSessionConfig] = {s.sender_comp_id: s for s in config.sessions}
        self._books: dict[str, SessionBook] = {
            s.sender_comp_id: SessionBook(SessionLimits(
                max_order_quantity=s.max_order_quantity, max_order_notional=s.max_order_notional,
                max_position=s.max_position, max_orders_per_s=s.max_orders_per_s))
            for s in config.sessions
        }
        self._owner: dict[str, str] = {}  # tradeguard client_order_id -> SenderCompID
        self._closing: dict[str, str] = {}  # a flatten's closing order -> the SenderCompID it closes for
        self._closing_sources = {closing_source(s.source): s.sender_comp_id for s in config.sessions}
        self._mids: dict[tuple[str, str], Decimal] = {}
        self._logged_on: set[str] = set()
        self._ids = itertools.count(1)
        self._run = f"{time.time_ns() // 1_000_000:x}"
        self._acceptor: fix.ThreadedSocketAcceptor | None = None
        self._bridge: _Bridge | None = None
        self._application: _Application | None = None
        self.received = 0
        self.rejected_requests = 0
        self.log = logger.bind(channel="main", actor="fix_gateway")

    # ---- lifecycle ------------------------------------------------------------------

    def setup(self) -> None:
        environ = os.environ if self._environ is None else self._environ
        credentials = {s.sender_comp_id: (s.user, environ.get(s.password_variable))
                       for s in self.config.sessions}
        ref = self.actor_ref

        def tell(message: Any) -> None:
            try:
                ref.tell(message)
            except pykka.ActorDeadError:
                pass  # the gateway is stopping: its sessions end with it

        self._bridge = _Bridge(tell, credentials)
        bus.subscribe(topics.ORDERS, self.name)
        bus.subscribe(topics.MARKET, self.name)
        bus.subscribe(topics.SUBMITTED, self.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        native = native_accept_host()
        accept_port = self.config.port if native else spare_port()
        settings = self._settings(accept_port)
        self._application = _Application(self._bridge)
        acceptor = fix.ThreadedSocketAcceptor(self._application, fix.FileStoreFactory(settings), settings)
        acceptor.start()
        if not native:
            try:
                listen_on_host(accept_port, self.config.host, self.config.port)
            except Exception:
                acceptor.stop(True)
                raise
        self._acceptor = acceptor
        self.log.info(f"fix gateway listening on {self.config.host}:{self.config.port} "
                      f"for {', '.join(self._sessions)}")

    def teardown(self) -> None:
        # The sessions end with the gateway: honour cancel-on-disconnect for them all.
        for sender in list(self._sessions):
            self._cancel_on_disconnect(sender, "the order-entry gateway stopped")
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            try:
                acceptor.stop(True)
            except Exception:
                self.log.exception("fix gateway: stopping the acceptor failed")

    def _settings(self, accept_port: int) -> fix.SessionSettings:
        cfg = self.config
        values = {
            "ConnectionType": "acceptor",
            "SocketAcceptHost": cfg.host,
            "SocketAcceptPort": str(accept_port),
            "SocketReuseAddress": "Y",
            "SocketNodelay": "Y",
            "AllowedRemoteAddresses": "127.0.0.1",
            "FileStorePath": str(self.state_dir / "store"),
            "StartTime": "00:00:00",
            "EndTime": "00:00:00",
            "NonStopSession": "Y",
            "ResetOnLogon": "N",
            "ResetOnLogout": "N",
            "ResetOnDisconnect": "N",
            "PersistMessages": "Y",
            **dictionary_settings(cfg.begin_string, self.state_dir),
        }
        defaults = fix.Dictionary()
        for key, value in values.items():
            defaults.setString(key, value)
        settings = fix.SessionSettings()
        settings.set(defaults)
        for sender in self._sessions:
            settings.set(self._session_id(sender), fix.Dictionary())
        return settings

    def _session_id(self, sender: str) -> fix.SessionID:
        return fix.SessionID(self.config.begin_string, self.config.comp_id, sender)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            _Inbound: self._on_inbound,
            _SessionUp: self._on_session_up,
            _SessionDown: self._on_session_down,
            QuoteBatch: self._on_quotes,
            SubmitOrder: self._on_submitted,
            OrderAccepted: self._on_event,
            OrderFilled: self._on_event,
            OrderCancelled: self._on_event,
            OrderRejected: self._on_event,
            GetGatewayState: lambda _m: self.state(),
        }

    def state(self) -> GatewayState:
        """The gateway's sessions and counters."""
        bridge = self._bridge
        return GatewayState(
            logged_on=tuple(sorted(self._logged_on)),
            working={s: len(b.working()) for s, b in self._books.items()},
            refused_logons=bridge.refused_logons if bridge else 0,
            received=self.received, rejected_requests=self.rejected_requests,
            callback_errors=bridge.callback_errors if bridge else 0,
        )

    # ---- sessions -------------------------------------------------------------------

    def _on_session_up(self, message: _SessionUp) -> None:
        self._logged_on.add(message.sender)
        self.log.info(f"fix gateway: {message.sender} logged on")

    def _on_session_down(self, message: _SessionDown) -> None:
        self._logged_on.discard(message.sender)
        self.log.info(f"fix gateway: {message.sender} logged out")
        self._cancel_on_disconnect(message.sender, "session disconnected")

    def _cancel_on_disconnect(self, sender: str, why: str) -> None:
        session = self._sessions.get(sender)
        book = self._books.get(sender)
        if session is None or book is None or not session.cancel_on_disconnect:
            return
        working = book.working()
        if working:
            logger.bind(channel="governance").warning(
                f"fix gateway: {why}: cancelling {len(working)} working orders of {sender}")
        for entry in working:
            self._abandon_replace(sender, book, entry, why)
            registry.tell(entry.order.venue, CancelOrder(client_order_id=entry.order.client_order_id,
                                                         venue=entry.order.venue, source=session.source))

    def _abandon_replace(self, sender: str, book: SessionBook, entry: EntryOrder, why: str) -> None:
        """The order is cancelled for good: a replace of it waiting for that cancel is rejected."""
        rejected = book.abandon_replace(entry, f"too late: {why}")
        if rejected is not None:
            self._send_cancel_reject(sender, rejected)

    # ---- market data (reference prices) ---------------------------------------------

    def _on_quotes(self, batch: QuoteBatch) -> None:
        for quote in batch.quotes:
            if quote.bid > 0 and quote.ask > quote.bid:
                self._mids[(batch.venue, quote.symbol)] = quote.mid

    # ---- requests from the sessions -------------------------------------------------

    def _on_inbound(self, request: _Inbound) -> None:
        self.received += 1
        handlers = {"D": self._on_new_order, "F": self._on_cancel, "G": self._on_replace,
                    "q": self._on_mass_cancel}
        handler = handlers.get(request.msg_type)
        try:
            if handler is None:
                raise _BadRequest(f"unsupported message type {request.msg_type}")
            handler(request)
        except (_BadRequest, MessageError, InvalidOperation, ValueError, KeyError) as exc:
            self._business_reject(request, str(exc) or type(exc).__name__)
        except Exception as exc:  # one bad request must not take the gateway down
            self.log.exception(f"fix gateway: {request.sender} {request.msg_type} could not be handled")
            self._business_reject(request, f"internal error: {type(exc).__name__}")

    def _on_new_order(self, request: _Inbound) -> None:
        sender, fields = request.sender, request.fields
        session, book = self._sessions[sender], self._books[sender]
        cl_ord_id = fields.get(Tag.CL_ORD_ID)
        if not cl_ord_id:
            raise _BadRequest("ClOrdID (11) is required")
        venue = fields.get(_EX_DESTINATION) or session.default_venue or next(iter(self.venues))
        order = self._decode_order(fields, session, venue)
        refusal: tuple[RejectReason, str] | None = None
        if book.is_duplicate(cl_ord_id):
            refusal = RejectReason.DUPLICATE_ID, f"ClOrdID {cl_ord_id} is still working"
        elif venue not in self.venues:
            refusal = RejectReason.UNKNOWN_VENUE, f"no venue named {venue}"
        else:
            refusal = book.check(order, self._mids.get((venue, order.symbol)), self.clock())
        if refusal is not None:
            logger.bind(channel="governance").info(
                f"fix gateway: {sender} order {cl_ord_id} refused: {refusal[0]}: {refusal[1]}")
            self._send_report(sender, order, book.refuse_new(order, cl_ord_id, *refusal))
            return
        entry = book.add(order, cl_ord_id)
        self._owner[order.client_order_id] = sender
        if not registry.tell("risk_governor", order):
            self._send_report(sender, order, book.refuse(entry, RejectReason.MODE,
                                                         "the risk governor is down"))
        for key in book.forget_done():
            self._owner.pop(key, None)

    def _decode_order(self, fields: dict[int, str], session: FixSessionConfig, venue: str) -> SubmitOrder:
        side = SIDES.get(fields.get(Tag.SIDE, ""))
        if side is None:
            raise _BadRequest(f"unsupported Side {fields.get(Tag.SIDE)}")
        order_type = ORD_TYPES.get(fields.get(Tag.ORD_TYPE, ""))
        if order_type is None:
            raise _BadRequest(f"unsupported OrdType {fields.get(Tag.ORD_TYPE)}")
        tif = TIFS.get(fields.get(Tag.TIME_IN_FORCE, "0"))
        if tif is None:
            raise _BadRequest(f"unsupported TimeInForce {fields.get(Tag.TIME_IN_FORCE)}")
        quantity = fields.get(Tag.ORDER_QTY)
        if quantity is None:
            raise _BadRequest("OrderQty (38) is required")
        price, stop = fields.get(Tag.PRICE), fields.get(Tag.STOP_PX)
        return SubmitOrder(
            client_order_id=self._next_id(session.sender_comp_id), venue=venue,
            symbol=fields.get(Tag.SYMBOL, ""), side=side, quantity=Decimal(quantity),
            order_type=order_type, limit_price=Decimal(price) if price is not None else None,
            stop_price=Decimal(stop) if stop is not None else None, time_in_force=tif,
            reduce_only="E" in fields.get(Tag.EXEC_INST, "").split(),
            source=session.source, created_ns=now_ns(),
        )

    def _next_id(self, sender: str) -> str:
        return f"{sender}-{self._run}-{next(self._ids)}"

    def _on_cancel(self, request: _Inbound) -> None:
        sender, fields = request.sender, request.fields
        cancel_id = fields.get(Tag.CL_ORD_ID)
        orig = fields.get(Tag.ORIG_CL_ORD_ID)
        if not cancel_id or not orig:
            raise _BadRequest("ClOrdID (11) and OrigClOrdID (41) are required")
        book = self._books[sender]
        entry = book.find(orig)
        if entry is None or not entry.working or entry.replace is not None:
            if entry is None:
                reason, text = CxlRejReason.UNKNOWN_ORDER, "unknown order"
            elif entry.working:
                reason, text = CxlRejReason.PENDING, "a replace of the order is pending"
            else:
                reason, text = CxlRejReason.TOO_LATE, "order already done"
            self._send_cancel_reject(sender, book.cancel_reject(cancel_id, orig, entry,
                                                                CxlRejResponseTo.CANCEL, reason, text))
            return
        entry.cancel_cl_ord_id = cancel_id
        order = entry.order
        if not registry.tell(order.venue, CancelOrder(client_order_id=order.client_order_id,
                                                      venue=order.venue, source=order.source)):
            entry.cancel_cl_ord_id = None
            self._send_cancel_reject(sender, book.cancel_reject(
                cancel_id, orig, entry, CxlRejResponseTo.CANCEL, CxlRejReason.VENUE,
                f"venue {order.venue} is down"))

    def _on_replace(self, request: _Inbound) -> None:
        sender, fields = request.sender, request.fields
        session, book = self._sessions[sender], self._books[sender]
        cl_ord_id = fields.get(Tag.CL_ORD_ID)
        orig = fields.get(Tag.ORIG_CL_ORD_ID)
        if not cl_ord_id or not orig:
            raise _BadRequest("ClOrdID (11) and OrigClOrdID (41) are required")
        entry = book.find(orig)
        venue = (fields.get(_EX_DESTINATION) or (entry.order.venue if entry is not None else None)
                 or session.default_venue or next(iter(self.venues)))
        replacement = self._decode_order(fields, session, venue)
        outcome = book.request_replace(orig, cl_ord_id, replacement,
                                       self._mids.get((venue, replacement.symbol)), self.clock())
        if isinstance(outcome, CancelReject):
            logger.bind(channel="governance").info(
                f"fix gateway: {sender} replace {cl_ord_id} of {orig} refused: {outcome.text}")
            self._send_cancel_reject(sender, outcome)
            return
        assert entry is not None
        self._send_report(sender, entry.order, outcome)
        order = entry.order
        if not registry.tell(order.venue, CancelOrder(client_order_id=order.client_order_id,
                                                      venue=order.venue, source=order.source)):
            book.abandon_replace(entry, "")
            self._send_cancel_reject(sender, book.cancel_reject(
                cl_ord_id, orig, entry, CxlRejResponseTo.REPLACE, CxlRejReason.VENUE,
                f"venue {order.venue} is down"))

    def _on_mass_cancel(self, request: _Inbound) -> None:
        sender, fields = request.sender, request.fields
        request_id = fields.get(Tag.CL_ORD_ID) or ""
        kind = fields.get(Tag.MASS_CANCEL_REQUEST_TYPE, "")
        symbol = fields.get(Tag.SYMBOL)
        source = self._sessions[sender].source
        if kind not in ("1", "7") or (kind == "1" and not symbol):
            self._send_mass_report(sender, request_id, kind, "0", 0, symbol,
                                   text="only types 1 (by symbol) and 7 (all) are served")
            return
        book = self._books[sender]
        targets = [e for e in book.working() if kind == "7" or e.order.symbol == symbol]
        for entry in targets:
            self._abandon_replace(sender, book, entry, "the orders were mass cancelled")
            registry.tell(entry.order.venue, CancelOrder(client_order_id=entry.order.client_order_id,
                                                         venue=entry.order.venue, source=source))
        self._send_mass_report(sender, request_id, kind, kind, len(targets), symbol)

    # ---- events from the venues and the governor --------------------------------------

    def _on_submitted(self, order: SubmitOrder) -> None:
        """An order passed to a venue: a flatten's closing order for a session is followed."""
        sender = self._closing_sources.get(order.source)
        if sender is not None:
            self._closing[order.client_order_id] = sender

    def _on_closing_event(self, sender: str,
                          event: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> None:
        if isinstance(event, OrderFilled):
            self._books[sender].note_closing_fill(event)
        if isinstance(event, OrderCancelled | OrderRejected) or (
                isinstance(event, OrderFilled) and event.leaves_quantity == 0):
            self._closing.pop(event.client_order_id, None)

    def _on_event(self, event: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> None:
        closing_for = self._closing.get(event.client_order_id)
        if closing_for is not None:
            self._on_closing_event(closing_for, event)
            return
        sender = self._owner.get(event.client_order_id)
        if sender is None:
            return
        book = self._books[sender]
        entry = book.orders.get(event.client_order_id)
        if entry is None:
            return
        try:
            outcomes = book.handle(event)
        except Exception:  # an event that cannot be applied is logged, never fatal
            self.log.exception(f"fix gateway: {type(event).__name__} for {event.client_order_id} not applied")
            return
        self._deliver(sender, book, outcomes)

    def _deliver(self, sender: str, book: SessionBook, outcomes: list[Outcome]) -> None:
        """Send the session its reports and cancel rejects; send a replacement on."""
        for outcome in outcomes:
            if isinstance(outcome, ExecReport):
                about = book.orders.get(outcome.order_id)
                if about is not None:
                    self._send_report(sender, about.order, outcome)
            elif isinstance(outcome, CancelReject):
                self._send_cancel_reject(sender, outcome)
            else:
                self._owner[outcome.client_order_id] = sender
                if not registry.tell("risk_governor", outcome):
                    self._deliver(sender, book, book.handle(OrderRejected(
                        client_order_id=outcome.client_order_id, venue=outcome.venue,
                        reason=RejectReason.MODE, text="the risk governor is down",
                        symbol=outcome.symbol, source=outcome.source, ts_ns=now_ns())))

    # ---- messages to the sessions -----------------------------------------------------

    def _send(self, sender: str, message: fix.Message) -> None:
        try:
            fix.Session.sendToTarget(message, self._session_id(sender))
        except fix.SessionNotFound:
            self.log.warning(f"fix gateway: session {sender} not found; message dropped")

    def _send_report(self, sender: str, order: SubmitOrder, report: ExecReport) -> None:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "8")
        values: list[tuple[int, str | None]] = [
            (Tag.ORDER_ID, report.order_id),
            (Tag.CL_ORD_ID, report.cl_ord_id),
            (Tag.ORIG_CL_ORD_ID, report.orig_cl_ord_id),
            (Tag.EXEC_ID, report.exec_id or f"{report.order_id}-{next(self._ids)}"),
            (Tag.EXEC_TYPE, report.exec_type),
            (Tag.ORD_STATUS, report.ord_status),
            (Tag.ORD_REJ_REASON, _ORD_REJ_OTHER if report.exec_type == "8" else None),
            (Tag.SYMBOL, order.symbol or "N/A"),
            (Tag.SIDE, SIDE_CODES[order.side]),
            (Tag.ORDER_QTY, format_decimal(report.order_qty if report.order_qty is not None
                                           else order.quantity)),
            (Tag.PRICE, format_decimal(order.limit_price) if order.limit_price is not None else None),
            (Tag.LAST_QTY, format_decimal(report.last_qty) if report.last_qty is not None else None),
            (Tag.LAST_PX, format_decimal(report.last_px) if report.last_px is not None else None),
            (Tag.LEAVES_QTY, format_decimal(report.leaves_qty)),
            (Tag.CUM_QTY, format_decimal(report.cum_qty)),
            (Tag.AVG_PX, format_decimal(report.avg_px)),
            (Tag.TRANSACT_TIME, utc_timestamp()),
            (Tag.TEXT, report.text[:200] if report.text else None),
        ]
        for tag, value in values:
            if value is not None:
                message.setField(int(tag), value)
        self._send(sender, message)

    def _send_cancel_reject(self, sender: str, reject: CancelReject) -> None:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "9")
        for tag, value in ((Tag.ORDER_ID, reject.order_id), (Tag.CL_ORD_ID, reject.cl_ord_id),
                           (Tag.ORIG_CL_ORD_ID, reject.orig_cl_ord_id), (Tag.ORD_STATUS, reject.ord_status),
                           (Tag.CXL_REJ_RESPONSE_TO, reject.response_to),
                           (Tag.CXL_REJ_REASON, reject.reason), (Tag.TEXT, reject.text[:200])):
            if value:
                message.setField(int(tag), value)
        self._send(sender, message)

    def _send_mass_report(self, sender: str, request_id: str, kind: str, response: str, count: int,
                          symbol: str | None, *, text: str = "") -> None:
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "r")
        values: list[tuple[int, str | None]] = [
            (Tag.CL_ORD_ID, request_id), (Tag.ORDER_ID, f"MC-{request_id}"),
            (Tag.MASS_CANCEL_REQUEST_TYPE, kind or "0"), (Tag.MASS_CANCEL_RESPONSE, response),
            (Tag.MASS_CANCEL_REJECT_REASON, "99" if response == "0" else None),
            (Tag.TOTAL_AFFECTED_ORDERS, str(count)), (Tag.SYMBOL, symbol),
            (Tag.TRANSACT_TIME, utc_timestamp()), (Tag.TEXT, text or None),
        ]
        for tag, value in values:
            if value is not None:
                message.setField(int(tag), value)
        self._send(sender, message)

    def _business_reject(self, request: _Inbound, text: str) -> None:
        self.rejected_requests += 1
        _log.warning(f"fix gateway: {request.sender} {request.msg_type} rejected: {text}")
        message = fix.Message()
        message.getHeader().setField(Tag.MSG_TYPE, "j")
        unsupported = text.startswith("unsupported message type")
        values: list[tuple[int, str | None]] = [
            (Tag.REF_SEQ_NUM, request.seq), (Tag.REF_MSG_TYPE, request.msg_type),
            (_BUSINESS_REJECT_REF_ID, request.fields.get(Tag.CL_ORD_ID)),
            (Tag.BUSINESS_REJECT_REASON, "3" if unsupported else "0"), (Tag.TEXT, text[:200]),
        ]
        for tag, value in values:
            if value is not None:
                message.setField(int(tag), value)
        self._send(request.sender, message)
