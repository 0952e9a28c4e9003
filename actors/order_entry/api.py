"""The client API's actor: orders that scripts send over the control channel.

The dashboard's control thread authenticates each request (the token file, the peer's
uid) and asks this actor (``ApiSubmit``, ``ApiCancel``, ``GetApiOrders``,
``GetApiPositions``). Every order goes to the risk governor with ``source = "api:<user>"``
(the user the operating system names), and this actor follows it through the order events
on the bus. Fills of these orders are published on ``fills.pub`` in the state directory
(a ZeroMQ PUB socket, owner-only like the snapshot socket), one two-frame message each:
the order's source, then the fill as JSON (``ApiFill``). A beat (topic ``BEAT_TOPIC``,
body ``{}``) goes out every ``BEAT_S`` so that a subscriber can tell when its subscription
has reached the socket (a PUB socket drops what it sends before that).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import zmq
from loguru import logger

from actors import topics
from actors.order_entry.protocol import (
    API_SOURCE_PREFIX,
    BEAT_S,
    BEAT_TOPIC,
    FILLS_SOCKET,
    ApiCancel,
    ApiFill,
    ApiOrder,
    ApiPosition,
    ApiSubmit,
    GetApiOrders,
    GetApiPositions,
    fills_endpoint,
)
from core.order_entry import ExecReport, SessionBook, SessionLimits
from messages import (
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    PortfolioSnapshot,
    RejectReason,
)
from supervision import SupervisedActor, TimerHandle, bus, registry, scheduler

__all__ = ["ClientApi"]

_UNLIMITED = SessionLimits(max_order_quantity=Decimal("Infinity"), max_order_notional=Decimal("Infinity"),
                           max_position=Decimal("Infinity"), max_orders_per_s=1_000_000)


class _Beat(msgspec.Struct, frozen=True):
    """Tell (from the timer): publish a beat."""


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


class ClientApi(SupervisedActor):
    """Carries the client API's orders to the governor and follows them."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self._books: dict[str, SessionBook] = {}
        self._owner: dict[str, str] = {}
        self._texts: dict[str, str] = {}
        self._portfolio: PortfolioSnapshot | None = None
        self._publisher: zmq.Socket[bytes] | None = None
        self._timer: TimerHandle | None = None
        self.log = logger.bind(channel="main", actor="client_api")

    def setup(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        publisher = context.socket(zmq.PUB)
        publisher.setsockopt(zmq.LINGER, 0)
        path = self.state_dir / FILLS_SOCKET
        path.unlink(missing_ok=True)
        try:
            publisher.bind(fills_endpoint(self.state_dir))
            os.chmod(path, 0o600)
        except Exception:
            publisher.close()
            raise
        self._publisher = publisher
        bus.subscribe(topics.ORDERS, self.name)
        bus.subscribe(topics.PORTFOLIO, self.name)
        self._beat(_Beat())

    def _beat(self, _message: _Beat) -> None:
        if self._publisher is not None:
            try:
                self._publisher.send_multipart([BEAT_TOPIC, b"{}"], zmq.NOBLOCK)
            except zmq.Again:
                pass
        ref = self.actor_ref

        def tell() -> None:
            try:
                ref.tell(_Beat())
            except Exception:
                pass  # stopped meanwhile

        self._timer = scheduler.call_later(BEAT_S, tell)

    def teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._publisher is not None:
            self._publisher.close(linger=0)
            self._publisher = None
            (self.state_dir / FILLS_SOCKET).unlink(missing_ok=True)

    def handlers(self) -> dict[type, Callable[[Any], Any]]:
        return {
            _Beat: self._beat,
            ApiSubmit: self._on_submit,
            ApiCancel: self._on_cancel,
            GetApiOrders: self._on_orders,
            GetApiPositions: lambda _m: self._positions(),
            PortfolioSnapshot: lambda m: setattr(self, "_portfolio", m),
            OrderAccepted: self._on_event,
            OrderFilled: self._on_event,
            OrderCancelled: self._on_event,
            OrderRejected: self._on_event,
        }

    def _book(self, user: str) -> SessionBook:
        return self._books.setdefault(user, SessionBook(_UNLIMITED))

    def _on_submit(self, request: ApiSubmit) -> ApiOrder:
        source = f"{API_SOURCE_PREFIX}{request.user}"
        order = msgspec.structs.replace(request.order, source=source,
                                        created_ns=request.order.created_ns or time.time_ns())
        book = self._book(request.user)
        if order.client_order_id in self._owner:
            report = book.refuse_new(order, order.client_order_id, RejectReason.DUPLICATE_ID,
                                     "client_order_id already used")
            return ApiOrder(client_order_id=order.client_order_id, venue=order.venue, symbol=order.symbol,
                            side=str(order.side), quantity=_text(order.quantity), status="rejected",
                            filled_quantity="0", average_price="0", leaves_quantity="0", text=report.text)
        entry = book.add(order, order.client_order_id)
        self._owner[order.client_order_id] = request.user
        self.log.bind(source=source).info(f"client api: order {order.client_order_id} from {request.user}")
        if not registry.tell("risk_governor", order):
            refused = book.refuse(entry, RejectReason.MODE, "the risk governor is down")
            self._texts[order.client_order_id] = refused.text
        return self._describe(request.user, order.client_order_id)

    def _on_cancel(self, request: ApiCancel) -> ApiOrder | None:
        if self._owner.get(request.client_order_id) != request.user:
            return None
        entry = self._book(request.user).orders.get(request.client_order_id)
        if entry is None:
            return None
        if entry.working:
            registry.tell(entry.order.venue, CancelOrder(client_order_id=entry.order.client_order_id,
                                                         venue=entry.order.venue, source=entry.order.source))
        return self._describe(request.user, request.client_order_id)

    def _on_orders(self, request: GetApiOrders) -> list[ApiOrder]:
        book = self._books.get(request.user)
        if book is None:
            return []
        return [self._describe(request.user, key) for key, entry in book.orders.items()
                if entry.working or not request.working_only]

    def _positions(self) -> list[ApiPosition]:
        if self._portfolio is None:
            return []
        return [ApiPosition(venue=p.venue, symbol=p.symbol, quantity=_text(p.quantity),
                            average_price=_text(p.average_price))
                for p in self._portfolio.positions if p.quantity != 0]

    def _describe(self, user: str, key: str) -> ApiOrder:
        entry = self._books[user].orders[key]
        order = entry.order
        return ApiOrder(client_order_id=key, venue=order.venue, symbol=order.symbol, side=str(order.side),
                        quantity=_text(order.quantity), status=str(entry.status),
                        filled_quantity=_text(entry.cum), average_price=_text(entry.avg_px),
                        leaves_quantity=_text(entry.leaves), text=self._texts.get(key, ""))

    def _on_event(self, event: OrderAccepted | OrderFilled | OrderCancelled | OrderRejected) -> None:
        user = self._owner.get(event.client_order_id)
        if user is None:
            return
        book = self._book(user)
        reports = [o for o in book.handle(event) if isinstance(o, ExecReport)]
        if not reports:
            return
        report = reports[-1]
        if report.text and isinstance(event, OrderRejected):
            self._texts[event.client_order_id] = report.text
        if isinstance(event, OrderFilled) and self._publisher is not None:
            fill = ApiFill(client_order_id=event.client_order_id, venue=event.venue, symbol=event.symbol,
                           side=str(event.side), quantity=_text(event.quantity), price=_text(event.price),
                           leaves_quantity=_text(event.leaves_quantity), fill_id=event.fill_id,
                           source=f"{API_SOURCE_PREFIX}{user}", ts_ns=event.ts_ns)
            try:
                self._publisher.send_multipart([fill.source.encode(), msgspec.json.encode(fill)], zmq.NOBLOCK)
            except zmq.Again:
                pass  # no reader keeps up: a PUB socket drops, never blocks
        for key in book.forget_done():
            self._owner.pop(key, None)
            self._texts.pop(key, None)

