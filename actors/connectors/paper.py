"""The paper connector: the in-process front of the simulated venue.

The venue's engine is named after the connector, so its events already carry the
connector's name as their venue.

Quotes arrive once per engine step as one ``QuoteBatch``; order events arrive from the
engine's listener. Both are handed to the actor through the attempt's ``SessionLink``, as
a network connector's reader thread would. The session is up as soon as the connector is
attached; a venue that is down refuses the attachment (the attempt fails and is retried
with backoff), and a venue that goes down under an attached connector loses the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from actors.connectors._io import SessionLink
from actors.connectors.base import Connector, ConnectorConfig
from actors.errors import ConnectorError
from messages import (
    CancelAllDone,
    CancelOrder,
    OrderAccepted,
    OrderCancelled,
    OrderEvent,
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
from messages.bounds import FileName, Interval, Label
from venues.engine import EngineConfig, VenueEngine
from venues.paper import PaperVenue, paper_venue


class PaperConfig(ConnectorConfig, frozen=True, kw_only=True):
    """The paper venue: an engine in this process."""

    account: Annotated[Label, Meta(min_length=1)] = "PAPER-1"
    """Account at the simulated venue."""
    quote_interval_s: Interval = 0.05
    """Time between market steps (one QuoteBatch per step)."""
    persist: bool = True
    """Save the venue's account under the state directory after every order event."""
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    """The simulated market: symbols and starting mids, volatility, depth, latency, faults."""
    journal: FileName = "journal.sqlite3"
    """File name, in the state directory, of the journal whose orders for this venue that
    are not terminal are looked up at the venue at every resync (the keeper's
    ``journal_name``); read only, and only when the file exists."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.journal or "/" in self.journal or self.journal in (".", ".."):
            raise ValueError(f"journal: must be a plain file name, got {self.journal!r}")


class PaperConnector(Connector):
    """Connector to an in-process ``PaperVenue``."""

    kind = "paper"
    config_type = PaperConfig

    def __init__(self, config: PaperConfig, state_dir: Path) -> None:
        super().__init__(config, state_dir)
        self.paper_config = config
        self.venue: PaperVenue | None = None
        self._symbols: set[str] = set()
        self._attached = False
        self._link = SessionLink(None, 0)
        self._executions_delivered = 0
        """Executions of the account this generation already delivered from the venue's
        (append-only) list; the next positions request delivers only the ones after them."""

    # ---- session ----------------------------------------------------------------------

    def connect(self) -> None:
        cfg = self.paper_config
        path = self.state_dir / "venues" / f"paper-{cfg.name}.json" if cfg.persist else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        venue = paper_venue(cfg.name, cfg.engine, interval_s=cfg.quote_interval_s, state_path=path)
        link = self._link = self.link
        try:
            venue.attach(link.lost)
        except ConnectionRefusedError as exc:
            raise ConnectorError(str(exc), venue=cfg.name) from exc
        self.venue = venue
        venue.engine.add_order_listener(self._on_engine_event)
        venue.engine.add_quote_listener(self._on_engine_quotes)
        self._attached = True
        link.up()

    def disconnect(self) -> None:
        if self.venue is not None and self._attached:
            self.venue.engine.remove_order_listener(self._on_engine_event)
            self.venue.engine.remove_quote_listener(self._on_engine_quotes)
            self.venue.detach(self._link.lost)
        self._attached = False

    def resync(self) -> None:
        # Every execution the venue holds, what became of the journal's open orders, then
        # the positions (see request_positions).
        self.request_positions("", recover=True)

    def subscribe(self, symbols: Sequence[str]) -> None:
        self._symbols.update(symbols)

    # ---- orders -----------------------------------------------------------------------

    def submit(self, order: SubmitOrder) -> None:
        self._engine().submit(self.paper_config.account, order)

    def cancel(self, order: CancelOrder) -> None:
        self._engine().cancel(self.paper_config.account, order.client_order_id)

    def cancel_all(self, request_id: str) -> None:
        self._engine().cancel_all(self.paper_config.account)
        # Through the mailbox: the confirmation follows the cancellations the engine queued there.
        self.actor_ref.tell(CancelAllDone(venue=self.name, request_id=request_id, ts_ns=now_ns()))

    def query_order_status(self, order: SubmitOrder) -> None:
        """Ask the engine: an order it never received is rejected (with a WARNING); one
        waiting out the engine's latency is no answer yet; otherwise what the engine says
        (working: accepted; its executions; done: the terminal event) is delivered."""
        engine = self._engine()
        account, coid = self.paper_config.account, order.client_order_id
        status = engine.order_status(account, coid)
        if status is None:
            if not engine.is_pending(account, coid):
                for message in self.lost_order_events(coid, order.symbol, "no such order at the paper venue"):
                    self.deliver(message)
            return
        for fill in engine.executions(account):
            if fill.client_order_id == coid:
                self.deliver(fill)  # those already published are dropped
        if status.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            self.deliver(OrderAccepted(client_order_id=coid, venue=self.name, symbol=order.symbol,
                                       venue_order_id=status.venue_order_id, ts_ns=now_ns()))
        elif status.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
            self.deliver(OrderCancelled(client_order_id=coid, venue=self.name, symbol=order.symbol,
                                        text=f"{status.status} (order status)", ts_ns=now_ns()))
        elif status.status is OrderStatus.REJECTED:
            self.deliver(OrderRejected(client_order_id=coid, venue=self.name, reason=RejectReason.VENUE,
                                       text="rejected (order status)", symbol=order.symbol, ts_ns=now_ns()))

    def request_positions(self, request_id: str, *, recover: bool = False) -> None:
        """Deliver the venue's positions and working orders, preceded by every execution the
        positions include.

        The engine thread hands fills to the mailbox, so a fill can be in the venue's
        positions before its event reaches the bus; a report published ahead of it would
        disagree with the journal. The positions are therefore read between two reads of the
        (append-only) executions, and the executions they include are delivered first
        (their queued copies are then dropped as duplicates)."""
        engine = self._engine()
        account = self.paper_config.account
        executions = engine.executions(account)
        for _ in range(10):
            reported = engine.positions(account)
            after = engine.executions(account)
            stable = len(after) == len(executions)
            executions = after
            if stable:
                break
        for fill in executions[self._executions_delivered:]:
            self.deliver(fill)
        self._executions_delivered = len(executions)
        if recover:
            self._end_journal_orders()
        positions = tuple(
            VenuePosition(venue=self.name, symbol=p.symbol, quantity=p.quantity,
                          average_price=p.average_price)
            for p in reported if p.quantity != Decimal(0)
        )
        self.deliver(VenuePositions(venue=self.name, positions=positions, request_id=request_id,
                                    ts_ns=now_ns(), open_orders=self._working_orders()))

    def _end_journal_orders(self) -> None:
        """The journal's orders of this venue that are not terminal, as the venue knows them
        now: an order that ended while its events were lost (the session or the journal's
        keeper down) is ended now, once -- cancelled or rejected as the venue says, filled
        by its executions (delivered just before), rejected when the venue never received
        it; one the venue works but the journal never heard accepted is accepted."""
        records = self.journal_orders()
        if records is None:
            return
        engine, account = self._engine(), self.paper_config.account
        for record in records:
            coid, symbol = record.order.client_order_id, record.order.symbol
            status = engine.order_status(account, coid)
            message: OrderAccepted | OrderCancelled | OrderRejected | None = None
            if status is None and engine.is_pending(account, coid):
                continue  # on its way to the book (the engine's latency)
            if status is None:
                message = OrderRejected(client_order_id=coid, venue=self.name, reason=RejectReason.VENUE,
                                        text="the venue does not know the order: it never reached it",
                                        symbol=symbol, ts_ns=now_ns())
            elif status.status is OrderStatus.CANCELLED or status.status is OrderStatus.EXPIRED:
                message = OrderCancelled(client_order_id=coid, venue=self.name, symbol=symbol,
                                         text=f"{status.status} at the venue (order status)", ts_ns=now_ns())
            elif status.status is OrderStatus.REJECTED:
                message = OrderRejected(client_order_id=coid, venue=self.name, reason=RejectReason.VENUE,
                                        text="rejected at the venue (order status)", symbol=symbol,
                                        ts_ns=now_ns())
            elif not status.status.is_done() and record.status is OrderStatus.PENDING:
                message = OrderAccepted(client_order_id=coid, venue=self.name, symbol=symbol,
                                        venue_order_id=status.venue_order_id, ts_ns=now_ns())
            if message is not None:
                if not isinstance(message, OrderAccepted):
                    self.log.bind(client_order_id=coid).warning(
                        f"connector {self.name}: order {coid} ended unseen: {message.text}")
                self.deliver(message)

    def _working_orders(self) -> tuple[str, ...]:
        """The client order ids of the account's orders working at the venue now."""
        return tuple(sorted(working.order.client_order_id
                            for working in self._engine().open_orders(self.paper_config.account)))

    # ---- engine callbacks (engine thread) ---------------------------------------------

    def _on_engine_event(self, account: str, event: OrderEvent) -> None:
        if account == self.paper_config.account and self._attached and not self._venue_down():
            self._link.tell(event)

    def _on_engine_quotes(self, quotes: list[Quote]) -> None:
        if not self._attached or self._venue_down():
            return
        wanted = self._symbols
        batch = tuple(q for q in quotes if q.symbol in wanted)
        if batch:
            self._link.tell(QuoteBatch(venue=self.name, quotes=batch, recv_ns=now_ns()))

    def _venue_down(self) -> bool:
        """True when the venue went down under the session; the session is lost (once)."""
        if self.venue is None or not self.venue.down:
            return False
        self._link.lost("paper venue is down")
        return True

    def _engine(self) -> VenueEngine:
        if self.venue is None:
            raise ConnectorError("not connected", venue=self.name)
        if self.venue.down:
            raise ConnectorError("paper venue is down", venue=self.name)
        return self.venue.engine
