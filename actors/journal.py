"""The journal: every order, order event, fill, reconciliation and mode change in SQLite.

One file in WAL mode with ``synchronous=FULL``: a fill is on disk when ``record_fill``
returns, so a process killed right after loses nothing it acknowledged. Several
``Journal`` instances may open the same file; each holds its own connection, confined to
the thread that opened it. Decimals are stored as text, so nothing is rounded on the way in
or out.

Every table has one owner, named in ``TABLE_OWNERS``: the risk governor writes the
write-ahead order log (``orders``), the mode log and the incidents (``incidents``: each
opened, closed, and whether it counted as a degradation; what a restarted governor
restores); the position keeper writes fills,
order events and reconciliations. A ``Journal`` is opened as a named writer, and a write to
a table its writer does not own fails with ``JournalError`` before touching the file.
``MAINTENANCE_WRITER`` (the default) owns every table: for tools and tests, never for an
actor.

Every SQLite failure is raised as ``JournalError``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from actors import topics
from actors.errors import JournalError
from core.amendments import AmendedFills, Amendment, Applied, amendment_id, amendment_kind
from core.lifecycle import STEPS, VenueEvent
from messages import (
    FAILSAFE_SOURCE,
    CancelAllDone,
    Mode,
    ModeChanged,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    OrderType,
    Reconciliation,
    Side,
    SubmitOrder,
    TimeInForce,
    decode_as,
    encode,
    now_ns,
)
from messages.orders import FillBusted, FillCorrected

SCHEMA_VERSION = 2
GOVERNOR_WRITER = topics.RISK_GOVERNOR
"""The risk governor's journal: the write-ahead order log and the mode log."""
KEEPER_WRITER = topics.POSITION_KEEPER
"""The position keeper's journal: fills, order events, reconciliations."""
MAINTENANCE_WRITER = "maintenance"
"""Tools and tests: may write every table (never an actor's writer)."""
READER = "reader"
"""Reads only (the failsafe learning the orders working at start): owns no table."""

TABLE_OWNERS: dict[str, str] = {
    "orders": GOVERNOR_WRITER,
    "orders.status": KEEPER_WRITER,
    "orders.failsafe": KEEPER_WRITER,
    "mode_log": GOVERNOR_WRITER,
    "fills": KEEPER_WRITER,
    "order_events": KEEPER_WRITER,
    "reconciliations": KEEPER_WRITER,
    "fill_amendments": KEEPER_WRITER,
    "meta": MAINTENANCE_WRITER,
    "incidents": GOVERNOR_WRITER,
}
"""The one writer of each table (the schema itself is created by whoever opens first). The
governor writes each order row ahead of sending it; the keeper keeps the row's status
columns (status, status_text, venue_order_id, updated_ns) in step with the order events it
journals, in the same transaction (``orders.status``), and writes the failsafe's closing
order rows (``orders.failsafe``: the failsafe depends on neither the governor nor the
journal, so the keeper journals them from ``submitted``)."""
"""Version of the tables below, kept in SQLite's ``user_version``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    venue TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    order_type TEXT NOT NULL,
    limit_price TEXT,
    stop_price TEXT,
    time_in_force TEXT NOT NULL,
    reduce_only INTEGER NOT NULL,
    source TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    submitted_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    venue_order_id TEXT NOT NULL DEFAULT '',
    status_text TEXT NOT NULL DEFAULT '',
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS order_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL,
    venue TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fills (
    venue TEXT NOT NULL,
    fill_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    price TEXT NOT NULL,
    leaves_quantity TEXT NOT NULL,
    venue_order_id TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL,
    PRIMARY KEY (venue, fill_id)
);
CREATE INDEX IF NOT EXISTS fills_by_order ON fills (client_order_id);
CREATE TABLE IF NOT EXISTS reconciliations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    venue TEXT NOT NULL,
    reconciled INTEGER NOT NULL,
    body TEXT NOT NULL,
    ts_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mode_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    previous TEXT NOT NULL,
    current TEXT NOT NULL,
    reason TEXT NOT NULL,
    ts_ns INTEGER NOT NULL
);
"""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE fills ADD COLUMN inferred INTEGER NOT NULL DEFAULT 0",
        # A fill for an order the journal never held: activity on the account from elsewhere.
        "ALTER TABLE fills ADD COLUMN external INTEGER NOT NULL DEFAULT 0",
        # Trade busts and corrections, beside the fills they amend (the fills stay as reported).
        """CREATE TABLE IF NOT EXISTS fill_amendments (
            venue TEXT NOT NULL,
            amendment_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            fill_id TEXT NOT NULL,
            client_order_id TEXT NOT NULL,
            symbol TEXT NOT NULL,
            side TEXT NOT NULL,
            quantity TEXT NOT NULL,
            price TEXT NOT NULL,
            applied INTEGER NOT NULL,
            quantity_delta TEXT NOT NULL,
            notional_delta TEXT NOT NULL,
            realized_pnl TEXT NOT NULL,
            fill_ts_ns INTEGER NOT NULL,
            body TEXT NOT NULL,
            ts_ns INTEGER NOT NULL,
            recorded_ns INTEGER NOT NULL,
            PRIMARY KEY (venue, amendment_id)
        )""",
        "CREATE TABLE IF NOT EXISTS incidents (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " kind TEXT NOT NULL, venue TEXT NOT NULL, symbol TEXT NOT NULL, reason TEXT NOT NULL,"
        " opened_ns INTEGER NOT NULL, closed_ns INTEGER NOT NULL DEFAULT 0,"
        " counted INTEGER NOT NULL DEFAULT 0)",
    ),
}
"""The statements that take a journal from the version before each key to that key. A
journal of an older version is brought forward at open by its first writer, in one
transaction per version; columns and tables are only ever added (operators' scripts read
them). ``_SCHEMA`` is version 1; a new journal is created at version 1 and migrated."""

_FILL_TIME = "(CASE WHEN ts_ns > 0 THEN ts_ns ELSE recorded_ns END)"
"""When a fill counts as having happened: the venue's time, or ours when it sent none."""

_FILL_COLUMNS = (
    "venue, fill_id, client_order_id, symbol, side, quantity, price, leaves_quantity, "
    "venue_order_id, realized_pnl, ts_ns, recorded_ns, inferred, external"
)

_EVENT_OF_MESSAGE: dict[type, VenueEvent] = {
    OrderAccepted: VenueEvent.ACCEPTED,
    OrderRejected: VenueEvent.REJECTED,
    OrderCancelled: VenueEvent.CANCELLED,
}

_LIVE_STATES = (OrderStatus.PENDING, OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
"""The non-terminal states an order row can be in."""


def _status_steps(event: VenueEvent) -> list[tuple[OrderStatus, OrderStatus]]:
    """(from, to) for every live state ``event`` changes, per the lifecycle table: a late
    accept never undoes a cancel, a reject after a partial fill changes nothing, and a
    terminal state is never left."""
    return [(state, STEPS[state][event]) for state in _LIVE_STATES
            if event in STEPS[state] and STEPS[state][event] is not state]


class JournaledFill(msgspec.Struct, frozen=True, kw_only=True):
    """A fill as the journal holds it."""

    fill: OrderFilled
    """The execution as the venue reported it."""
    realized_pnl: Decimal
    """P&L this fill realized against the position it met."""
    recorded_ns: int
    """When it was committed to the journal, wall clock nanoseconds."""
    external: bool = False
    """True for a fill of an order the journal never held (activity on the account from
    elsewhere): ``fill.client_order_id`` and ``fill.venue_order_id`` are the venue's ids."""

    @property
    def effective_ns(self) -> int:
        """When the fill counts as having happened: the venue's time, else ours."""
        return self.fill.ts_ns or self.recorded_ns


class JournaledAmendment(msgspec.Struct, frozen=True, kw_only=True):
    """A trade bust or correction as the journal holds it."""

    amendment: FillBusted | FillCorrected
    """The venue's report."""
    applied: bool
    """True when it changed an execution in effect in the journal."""
    quantity_delta: Decimal
    """Change of the order's filled quantity (negative for a bust)."""
    notional_delta: Decimal
    """Change of the traded notional."""
    realized_pnl: Decimal
    """Change of realized P&L it booked (on the day it was journaled)."""
    fill_ts_ns: int
    """When the amended execution happened (venue time, else journal time); 0 when none."""
    recorded_ns: int
    """When it was committed to the journal, wall clock nanoseconds."""


class OrderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An order as the journal knows it: what was sent, and where it stands."""

    order: SubmitOrder
    """The order as it was passed to the connector."""
    status: OrderStatus
    """Last known status; fills are counted from the fills table."""
    filled_quantity: Decimal
    """Sum of the quantities of its journaled fills."""
    venue_order_id: str = ""
    """The venue's identifier, once known."""
    status_text: str = ""
    """The venue's words on the last status change (reject or cancel reason)."""
    submitted_ns: int = 0
    """When the journal saw the order, wall clock nanoseconds."""
    updated_ns: int = 0
    """When its status last changed, wall clock nanoseconds."""


OrderEventMessage = OrderAccepted | OrderRejected | OrderCancelled | CancelAllDone
"""The order events journaled in ``order_events`` (fills have their own table)."""

_EVENT_DECODER: msgspec.json.Decoder[OrderEventMessage] = msgspec.json.Decoder(OrderEventMessage)

_WRITE_LOCKS: dict[Path, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    """The lock every ``Journal`` of this process holds while it writes the file ``path``."""
    key = path.resolve()
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


class Journal:
    """An SQLite journal file and one connection to it, confined to the opening thread."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 5.0,
                 writer: str = MAINTENANCE_WRITER) -> None:
        """Open (creating if needed) the journal at ``path`` as ``writer``.

        ``busy_timeout_s`` is how long a write waits for another connection's write
        transaction before it fails with ``JournalError``; ``writer`` names who writes
        through this connection (``TABLE_OWNERS`` says which tables it may write).
        """
        if writer not in (GOVERNOR_WRITER, KEEPER_WRITER, MAINTENANCE_WRITER, READER):
            raise JournalError(f"journal {path}: unknown writer {writer!r}")
        self.path = Path(path)
        self.writer = writer
        self._busy_timeout_s = busy_timeout_s
        self._write_lock = _write_lock(self.path)
        self._thread = threading.get_ident()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout_s)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(f"journal {self.path}: WAL mode refused (got {mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            if writer == READER:
                version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
                if version != SCHEMA_VERSION:
                    raise JournalError(f"journal {self.path}: schema version {version}, expected "
                                       f"{SCHEMA_VERSION} (a reader creates nothing)")
            else:
                with self._writing("create schema"):
                    self._create_schema()
        except (sqlite3.Error, OSError) as exc:
            self._close_quietly()
            raise JournalError(f"journal {self.path}: cannot open: {exc}") from exc
        except JournalError:
            self._close_quietly()
            raise

    # ---- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; idempotent. Must be called from the opening thread."""
        if self._db is None:
            return
        self._check_thread()
        db, self._db = self._db, None
        try:
            db.close()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: close failed: {exc}") from exc

    @property
    def closed(self) -> bool:
        """True once ``close`` ran."""
        return self._db is None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- fills ----------------------------------------------------------------------

    def record_fill(self, fill: OrderFilled, realized_pnl: Decimal, recorded_ns: int | None = None,
                    *, external: bool = False) -> bool:
        """Commit ``fill`` with the P&L it realizes (``inferred`` as the fill says;
        ``external`` for an order the journal never held); False (and nothing written) when
        a fill with the same venue and fill id is already in the journal."""
        recorded = now_ns() if recorded_ns is None else recorded_ns
        with self._writing("record fill", "fills"), self._transaction() as db:
            cursor = db.execute(
                f"INSERT OR IGNORE INTO fills ({_FILL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    fill.venue, fill.fill_id, fill.client_order_id, fill.symbol, str(fill.side),
                    str(fill.quantity), str(fill.price), str(fill.leaves_quantity),
                    fill.venue_order_id, str(realized_pnl), fill.ts_ns, recorded,
                    int(fill.inferred), int(external),
                ),
            )
            if cursor.rowcount != 1:
                return False
            # The order row's status follows the fill (the keeper's columns, TABLE_OWNERS).
            event = VenueEvent.FILL if fill.leaves_quantity <= 0 else VenueEvent.PARTIAL_FILL
            self._step_status(db, fill.client_order_id, fill.venue, event, "", fill.venue_order_id, recorded)
            return True

    def has_fill(self, venue: str, fill_id: str) -> bool:
        """True when the fill ``(venue, fill_id)`` is in the journal."""
        with self._errors("read fill"):
            row = self._conn().execute(
                "SELECT 1 FROM fills WHERE venue = ? AND fill_id = ?", (venue, fill_id)
            ).fetchone()
            return row is not None

    def fill_records(self, since_ns: int | None = None, *, amended: bool = True,
                     venue: str | None = None) -> list[JournaledFill]:
        """Journaled fills in the order they were committed; with ``since_ns``, only those
        that happened at or after it (venue time, else journal time); with ``venue``, only
        that venue's. ``amended`` (the default): the executions in effect, busts and
        corrections applied (``core.amendments``: a busted fill is left out, a corrected one
        carries its new quantity, price and id); otherwise every fill as the venue reported
        it. The ``realized_pnl`` of a record is the one journaled with the fill."""
        sql = f"SELECT {_FILL_COLUMNS} FROM fills"
        where: list[str] = []
        params: list[Any] = []
        if since_ns is not None:
            where.append(f"{_FILL_TIME} >= ?")
            params.append(since_ns)
        if venue is not None:
            where.append("venue = ?")
            params.append(venue)
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._errors("read fills"):
            rows = self._conn().execute(sql + " ORDER BY rowid", tuple(params)).fetchall()
        records = [_fill_record(row) for row in rows]
        if not amended:
            return records
        amendments = self.amendments(venue)
        if not amendments:
            return records
        book = AmendedFills((r.fill for r in records), amendments)
        by_id = {(r.fill.venue, r.fill.fill_id): r for r in records}
        return [msgspec.structs.replace(by_id[(reported.venue, reported.fill_id)], fill=current)
                for reported, current in book.in_effect()]

    def fills(self, since_ns: int | None = None) -> list[OrderFilled]:
        """Journaled fills in effect, in commit order (see ``fill_records``)."""
        return [record.fill for record in self.fill_records(since_ns)]

    def knows_order(self, venue: str, client_order_id: str) -> bool:
        """True when the journal holds the order ``client_order_id`` for ``venue`` (written
        ahead by the governor, or a failsafe order): a fill of any other is external."""
        with self._errors("read order"):
            row = self._conn().execute(
                "SELECT 1 FROM orders WHERE client_order_id = ? AND venue = ?", (client_order_id, venue)
            ).fetchone()
            return row is not None

    # ---- trade busts and corrections ------------------------------------------------

    def record_amendment(self, amendment: Amendment, applied: Applied, realized_pnl: Decimal,
                         recorded_ns: int | None = None) -> bool:
        """Commit a trade bust or correction with what it did (``applied``: the execution
        before and after) and the change of realized P&L it books; False (and nothing
        written) when the venue's amendment id is already journaled for the venue."""
        recorded = now_ns() if recorded_ns is None else recorded_ns
        before = applied.before
        with self._writing("record amendment", "fill_amendments"), self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO fill_amendments (venue, amendment_id, kind, fill_id,"
                " client_order_id, symbol, side, quantity, price, applied, quantity_delta,"
                " notional_delta, realized_pnl, fill_ts_ns, body, ts_ns, recorded_ns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    amendment.venue, amendment_id(amendment), amendment_kind(amendment),
                    amendment.fill_id, amendment.client_order_id, amendment.symbol, str(amendment.side),
                    "0" if isinstance(amendment, FillBusted) else str(amendment.quantity),
                    str(amendment.price), int(applied.applied), str(applied.quantity_delta),
                    str(applied.notional_delta), str(realized_pnl),
                    0 if before is None else (before.ts_ns or recorded),
                    encode(amendment).decode(), amendment.ts_ns, recorded,
                ),
            )
            return cursor.rowcount == 1

    def has_amendment(self, venue: str, amendment_id: str) -> bool:
        """True when the bust or correction ``amendment_id`` of ``venue`` is journaled."""
        with self._errors("read amendment"):
            row = self._conn().execute(
                "SELECT 1 FROM fill_amendments WHERE venue = ? AND amendment_id = ?", (venue, amendment_id)
            ).fetchone()
            return row is not None

    def amendments(self, venue: str | None = None) -> list[Amendment]:
        """Journaled busts and corrections in commit order; with ``venue``, only its."""
        sql, params = "SELECT kind, body FROM fill_amendments", tuple[str, ...]()
        if venue is not None:
            sql, params = sql + " WHERE venue = ?", (venue,)
        with self._errors("read amendments"):
            rows = self._conn().execute(sql + " ORDER BY rowid", params).fetchall()
        return [_amendment(kind, body) for kind, body in rows]

    def amendment_records(self, since_ns: int = 0) -> list[JournaledAmendment]:
        """Journaled busts and corrections recorded at or after ``since_ns``, in commit order,
        with what each did."""
        with self._errors("read amendments"):
            rows = self._conn().execute(
                "SELECT kind, body, applied, quantity_delta, notional_delta, realized_pnl, fill_ts_ns,"
                " recorded_ns FROM fill_amendments WHERE recorded_ns >= ? ORDER BY rowid", (since_ns,)
            ).fetchall()
        return [
            JournaledAmendment(
                amendment=_amendment(kind, body),
                applied=bool(applied), quantity_delta=Decimal(q), notional_delta=Decimal(n),
                realized_pnl=Decimal(r), fill_ts_ns=fill_ts, recorded_ns=recorded,
            )
            for kind, body, applied, q, n, r, fill_ts, recorded in rows
        ]

    def fill_count(self) -> int:
        """How many fills the journal holds."""
        with self._errors("count fills"):
            return int(self._conn().execute("SELECT count(*) FROM fills").fetchone()[0])

    def traded_notional_since(self, ts_ns: int) -> Decimal:
        """Sum of |quantity x price| of the fills that happened at or after ``ts_ns``, as
        busts and corrections left them."""
        with self._errors("read fills"):
            db = self._conn()
            rows = db.execute(
                f"SELECT quantity, price FROM fills WHERE {_FILL_TIME} >= ?", (ts_ns,)
            ).fetchall()
            deltas = db.execute(
                "SELECT notional_delta FROM fill_amendments WHERE applied = 1 AND fill_ts_ns >= ?", (ts_ns,)
            ).fetchall()
        total = sum((abs(Decimal(q) * Decimal(p)) for q, p in rows), Decimal(0))
        return max(total + sum((Decimal(d) for (d,) in deltas), Decimal(0)), Decimal(0))

    def realized_pnl_since(self, ts_ns: int) -> Decimal:
        """Sum of the realized P&L of the fills that happened at or after ``ts_ns``, plus the
        changes booked by the busts and corrections journaled at or after it."""
        with self._errors("read fills"):
            db = self._conn()
            rows = db.execute(
                f"SELECT realized_pnl FROM fills WHERE {_FILL_TIME} >= ?", (ts_ns,)
            ).fetchall()
            rows += db.execute(
                "SELECT realized_pnl FROM fill_amendments WHERE recorded_ns >= ?", (ts_ns,)
            ).fetchall()
        return sum((Decimal(r) for (r,) in rows), Decimal(0))

    # ---- orders ---------------------------------------------------------------------

    def record_order(self, order: SubmitOrder, ts_ns: int | None = None) -> bool:
        """Journal an order passed to a connector; False when its client order id is
        already known (the first record stands)."""
        if self.writer == KEEPER_WRITER and order.source != FAILSAFE_SOURCE:
            raise JournalError(f"journal {self.path}: record order refused: orders is written by "
                               f"{GOVERNOR_WRITER}, not {self.writer} (only the failsafe's orders are)")
        ts = now_ns() if ts_ns is None else ts_ns
        with self._errors("read order"):
            known = self._conn().execute(
                "SELECT 1 FROM orders WHERE client_order_id = ?", (order.client_order_id,)
            ).fetchone()
        if known is not None:
            return False  # already written ahead (no write transaction, no disk flush)
        with self._writing("record order", "orders.failsafe" if self.writer == KEEPER_WRITER else "orders"):
            cursor = self._conn().execute(
                "INSERT OR IGNORE INTO orders (client_order_id, venue, symbol, side, quantity,"
                " order_type, limit_price, stop_price, time_in_force, reduce_only, source,"
                " created_ns, submitted_ns, status, updated_ns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    order.client_order_id, order.venue, order.symbol, str(order.side),
                    str(order.quantity), str(order.order_type), _text(order.limit_price),
                    _text(order.stop_price), str(order.time_in_force), int(order.reduce_only),
                    order.source, order.created_ns, ts, str(OrderStatus.PENDING), ts,
                ),
            )
            return cursor.rowcount == 1

    def record_order_event(self, event: OrderEventMessage, ts_ns: int | None = None) -> None:
        """Journal an order event and, for accepted, rejected, cancelled and expired (a
        cancel flagged ``expired``), the order's new status (one transaction). Fills go
        through ``record_fill``."""
        ts = now_ns() if ts_ns is None else ts_ns
        client_order_id = getattr(event, "client_order_id", "")
        lifecycle_event = _EVENT_OF_MESSAGE.get(type(event))
        if isinstance(event, OrderCancelled) and event.expired:
            lifecycle_event = VenueEvent.EXPIRED
        with self._writing("record order event", "order_events"), self._transaction() as db:
            db.execute(
                "INSERT INTO order_events (client_order_id, venue, kind, body, recorded_ns)"
                " VALUES (?,?,?,?,?)",
                (client_order_id, event.venue, type(event).__name__, encode(event).decode(), ts),
            )
            if lifecycle_event is None:
                return
            # The status columns of ``orders`` follow the events: the keeper's (see TABLE_OWNERS).
            self._step_status(db, client_order_id, event.venue, lifecycle_event, getattr(event, "text", ""),
                              getattr(event, "venue_order_id", ""), ts)

    @staticmethod
    def _step_status(db: sqlite3.Connection, client_order_id: str, venue: str, event: VenueEvent,
                     text: str, venue_order_id: str, ts: int) -> None:
        """Move the order row along the lifecycle for ``event`` (inside the caller's
        transaction); a row in a state the event does not change keeps it."""
        for before, after in _status_steps(event):
            cursor = db.execute(
                "UPDATE orders SET status = ?, status_text = CASE WHEN ? != '' THEN ? ELSE status_text END,"
                " updated_ns = ?, venue_order_id = CASE WHEN ? != '' THEN ? ELSE venue_order_id END"
                " WHERE client_order_id = ? AND venue = ? AND status = ?",
                (str(after), text, text, ts, venue_order_id, venue_order_id, client_order_id, venue,
                 str(before)),
            )
            if cursor.rowcount:
                return

    def orders(self) -> list[OrderRecord]:
        """Every journaled order in submission order, with its filled quantity."""
        with self._errors("read orders"):
            db = self._conn()
            rows = db.execute(
                "SELECT client_order_id, venue, symbol, side, quantity, order_type, limit_price,"
                " stop_price, time_in_force, reduce_only, source, created_ns, submitted_ns, status,"
                " venue_order_id, status_text, updated_ns FROM orders ORDER BY rowid"
            ).fetchall()
            fill_rows = db.execute("SELECT venue, client_order_id, quantity FROM fills").fetchall()
            fill_rows += db.execute("SELECT venue, client_order_id, quantity_delta FROM fill_amendments"
                                    " WHERE applied = 1").fetchall()
        filled: dict[tuple[str, str], Decimal] = {}
        for venue, client_order_id, quantity in fill_rows:
            key = (venue, client_order_id)
            filled[key] = filled.get(key, Decimal(0)) + Decimal(quantity)
        return [_order_record(row, filled) for row in rows]

    def order_counts(self, since_ns: int = 0) -> dict[str, int]:
        """Orders journaled at or after ``since_ns`` (``submitted``), orders whose status
        reached filled / cancelled / rejected at or after it, and fills journaled at or after
        it (``fills``). Each order and fill is one row, so nothing re-delivered counts twice."""
        with self._errors("count orders"):
            db = self._conn()
            submitted = db.execute("SELECT count(*) FROM orders WHERE submitted_ns >= ?",
                                   (since_ns,)).fetchone()[0]
            ended = dict(db.execute(
                "SELECT status, count(*) FROM orders WHERE updated_ns >= ? GROUP BY status", (since_ns,)
            ).fetchall())
            fills = db.execute("SELECT count(*) FROM fills WHERE recorded_ns >= ?", (since_ns,)).fetchone()[0]
        return {"submitted": int(submitted), "filled": int(ended.get("filled", 0)),
                "cancelled": int(ended.get("cancelled", 0)), "rejected": int(ended.get("rejected", 0)),
                "fills": int(fills)}

    def open_orders(self) -> list[OrderRecord]:
        """The orders not in a terminal state (pending, accepted, partially filled), in
        submission order, with their filled quantity."""
        live = tuple(str(state) for state in _LIVE_STATES)
        with self._errors("read orders"):
            db = self._conn()
            rows = db.execute(
                "SELECT client_order_id, venue, symbol, side, quantity, order_type, limit_price,"
                " stop_price, time_in_force, reduce_only, source, created_ns, submitted_ns, status,"
                " venue_order_id, status_text, updated_ns FROM orders"
                f" WHERE status IN ({','.join('?' * len(live))}) ORDER BY rowid", live
            ).fetchall()
            filled: dict[tuple[str, str], Decimal] = {}
            for row in rows:
                sql = ("SELECT quantity FROM fills WHERE venue = ? AND client_order_id = ?"
                       " UNION ALL SELECT quantity_delta FROM fill_amendments"
                       " WHERE applied = 1 AND venue = ? AND client_order_id = ?")
                for (quantity,) in db.execute(sql, (row[1], row[0], row[1], row[0])).fetchall():
                    key = (row[1], row[0])
                    filled[key] = filled.get(key, Decimal(0)) + Decimal(quantity)
        records = [_order_record(row, filled) for row in rows]
        return [record for record in records if not record.status.is_done()]

    def source_positions(self, source: str) -> tuple[dict[tuple[str, str], Decimal], int]:
        """Net quantity per (venue, symbol) of the fills of the orders whose ``source`` is
        ``source``, and how many such fills there are."""
        with self._errors("read fills"):
            rows = self._conn().execute(
                "SELECT f.venue, f.symbol, f.side, f.quantity FROM fills f JOIN orders o"
                " ON o.client_order_id = f.client_order_id AND o.venue = f.venue WHERE o.source = ?",
                (source,),
            ).fetchall()
        positions: dict[tuple[str, str], Decimal] = {}
        for venue, symbol, side, quantity in rows:
            signed = Decimal(quantity) if side == str(Side.BUY) else -Decimal(quantity)
            positions[(venue, symbol)] = positions.get((venue, symbol), Decimal(0)) + signed
        return positions, len(rows)

    def order_fill_ids(self, venue: str, client_order_id: str) -> list[str]:
        """The fill ids journaled for one order, in commit order."""
        with self._errors("read fills"):
            rows = self._conn().execute(
                "SELECT fill_id FROM fills WHERE venue = ? AND client_order_id = ? ORDER BY rowid",
                (venue, client_order_id),
            ).fetchall()
        return [row[0] for row in rows]

    def client_order_ids(self) -> set[str]:
        """Every client order id the journal has seen."""
        with self._errors("read orders"):
            rows = self._conn().execute("SELECT client_order_id FROM orders").fetchall()
        return {row[0] for row in rows}

    def order_events(self, client_order_id: str | None = None) -> list[OrderEventMessage]:
        """Journaled order events in order; with ``client_order_id``, only that order's."""
        sql, params = "SELECT body FROM order_events", tuple[str, ...]()
        if client_order_id is not None:
            sql, params = sql + " WHERE client_order_id = ?", (client_order_id,)
        with self._errors("read order events"):
            rows = self._conn().execute(sql + " ORDER BY id", params).fetchall()
        return [_EVENT_DECODER.decode(body) for (body,) in rows]

    # ---- reconciliations ------------------------------------------------------------

    def record_reconciliation(self, reconciliation: Reconciliation) -> None:
        """Journal the outcome of one comparison with a venue."""
        with self._writing("record reconciliation", "reconciliations"):
            self._conn().execute(
                "INSERT INTO reconciliations (venue, reconciled, body, ts_ns) VALUES (?,?,?,?)",
                (reconciliation.venue, int(reconciliation.reconciled),
                 encode(reconciliation).decode(), reconciliation.ts_ns),
            )

    def reconciliations(self, venue: str | None = None) -> list[Reconciliation]:
        """Journaled reconciliations in order; with ``venue``, only that venue's."""
        sql, params = "SELECT body FROM reconciliations", tuple[str, ...]()
        if venue is not None:
            sql, params = sql + " WHERE venue = ?", (venue,)
        with self._errors("read reconciliations"):
            rows = self._conn().execute(sql + " ORDER BY id", params).fetchall()
        return [decode_as(body, Reconciliation) for (body,) in rows]

    # ---- trading modes ----------------------------------------------------------------

    def record_mode(self, previous: Mode, current: Mode, reason: str, ts_ns: int) -> None:
        """Journal a trading mode transition."""
        with self._writing("record mode", "mode_log"):
            self._conn().execute(
                "INSERT INTO mode_log (previous, current, reason, ts_ns) VALUES (?,?,?,?)",
                (str(previous), str(current), reason, ts_ns),
            )

    def last_mode(self) -> Mode | None:
        """The mode of the last journaled transition, or None when there is none."""
        with self._errors("read mode"):
            row = self._conn().execute("SELECT current FROM mode_log ORDER BY id DESC LIMIT 1").fetchone()
        return None if row is None else Mode(row[0])

    def mode_history(self, limit: int | None = None) -> list[ModeChanged]:
        """Journaled transitions, oldest first; with ``limit``, only the last ``limit``."""
        with self._errors("read modes"):
            rows = self._conn().execute(
                "SELECT previous, current, reason, ts_ns FROM mode_log ORDER BY id DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [
            ModeChanged(previous=Mode(p), current=Mode(c), reason=r, ts_ns=t) for p, c, r, t in reversed(rows)
        ]

    # ---- meta -----------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value from the ``meta`` table, or None."""
        with self._errors("read meta"):
            row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a value in the ``meta`` table."""
        with self._writing("write meta", "meta"):
            self._conn().execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---- incidents (the risk governor's) ------------------------------------------------

    def record_incident(self, kind: str, venue: str, symbol: str, reason: str, opened_ns: int, *,
                        counted: bool, closed_ns: int = 0) -> int:
        """Journal an incident opened (``closed_ns`` 0) or one already over; its row id."""
        with self._writing("record incident", "incidents"):
            cursor = self._conn().execute(
                "INSERT INTO incidents (kind, venue, symbol, reason, opened_ns, closed_ns, counted)"
                " VALUES (?,?,?,?,?,?,?)", (kind, venue, symbol, reason, opened_ns, closed_ns, int(counted)))
            return int(cursor.lastrowid or 0)

    def close_incidents(self, closed_ns: int, ids: list[int] | None = None) -> int:
        """Mark the open incidents ``ids`` (every open one when None) closed; how many."""
        with self._writing("close incidents", "incidents"):
            if ids is None:
                cursor = self._conn().execute(
                    "UPDATE incidents SET closed_ns = ? WHERE closed_ns = 0", (closed_ns,))
            else:
                cursor = self._conn().executemany(
                    "UPDATE incidents SET closed_ns = ? WHERE id = ? AND closed_ns = 0",
                    [(closed_ns, i) for i in ids])
            return int(cursor.rowcount)

    def incident_rows(self, after_id: int = 0) -> list[tuple[int, str, str, str, str, int, int, bool]]:
        """Journaled incidents after row ``after_id``, oldest first: (id, kind, venue, symbol,
        reason, opened_ns, closed_ns, counted)."""
        with self._errors("read incidents"):
            rows = self._conn().execute(
                "SELECT id, kind, venue, symbol, reason, opened_ns, closed_ns, counted FROM incidents"
                " WHERE id > ? ORDER BY id", (after_id,)).fetchall()
        return [(int(i), k, v, s, r, int(o), int(c), bool(n)) for i, k, v, s, r, o, c, n in rows]

    def last_incident_of(self, kind: str) -> tuple[int, int] | None:
        """(id, opened_ns) of the last journaled incident of ``kind``; None for none."""
        with self._errors("read incidents"):
            row = self._conn().execute(
                "SELECT id, opened_ns FROM incidents WHERE kind = ? ORDER BY id DESC LIMIT 1",
                (kind,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def last_reconciled_since(self, ts_ns: int) -> dict[str, bool]:
        """Per venue compared at or after ``ts_ns``: whether its last reconciliation matched."""
        with self._errors("read reconciliations"):
            rows = self._conn().execute(
                "SELECT venue, reconciled FROM reconciliations WHERE id IN"
                " (SELECT max(id) FROM reconciliations WHERE ts_ns >= ? GROUP BY venue)", (ts_ns,)
            ).fetchall()
        return {venue: bool(reconciled) for venue, reconciled in rows}

    def orders_for_checks(self, updated_since_ns: int, limit: int) -> list[SubmitOrder]:
        """The orders still working, and those whose status changed at or after
        ``updated_since_ns``: the last ``limit`` of them in submission order."""
        live = tuple(str(state) for state in _LIVE_STATES)
        with self._errors("read orders"):
            rows = self._conn().execute(
                "SELECT client_order_id, venue, symbol, side, quantity, order_type, limit_price,"
                " stop_price, time_in_force, reduce_only, source, created_ns, submitted_ns, status,"
                " venue_order_id, status_text, updated_ns FROM orders"
                f" WHERE status IN ({','.join('?' * len(live))}) OR updated_ns >= ?"
                " ORDER BY rowid DESC LIMIT ?", (*live, updated_since_ns, limit)).fetchall()
        return [_order_record(row, {}).order for row in reversed(rows)]

    def fills_of(self, client_order_ids: list[str]) -> list[OrderFilled]:
        """The journaled fills of the orders ``client_order_ids``, in commit order."""
        found: list[OrderFilled] = []
        with self._errors("read fills"):
            db = self._conn()
            for start in range(0, len(client_order_ids), 500):
                chunk = client_order_ids[start:start + 500]
                rows = db.execute(f"SELECT {_FILL_COLUMNS} FROM fills WHERE client_order_id IN"
                                  f" ({','.join('?' * len(chunk))}) ORDER BY rowid", chunk).fetchall()
                found += [_fill_record(row).fill for row in rows]
        return found

    # ---- internals ------------------------------------------------------------------

    def _create_schema(self) -> None:
        db = self._conn()
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version == SCHEMA_VERSION:
            return  # nothing to write: opening an existing journal takes no write lock
        if version < 0 or version > SCHEMA_VERSION:
            raise JournalError(f"journal {self.path}: schema version {version}, expected {SCHEMA_VERSION}"
                               " (written by a newer tradeguard?)")
        if version == 0:
            with self._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_ns', ?)",
                           (str(now_ns()),))
                db.execute("PRAGMA user_version = 1")
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {target}")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalError(f"journal {self.path}: closed")
        self._check_thread()
        return self._db

    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise JournalError(
                f"journal {self.path}: used from thread {threading.get_ident()}, opened in {self._thread}"
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def _writing(self, what: str, table: str = "") -> Iterator[None]:
        """A write to ``table``: as ``_errors``, under this process's lock of the journal file.
        Two journals of one process (the keeper's and the governor's) then queue for each
        other here, not in SQLite's busy handler, which sleeps in steps of milliseconds.
        Waiting longer than ``busy_timeout_s`` fails as a busy database would. A writer that
        does not own ``table`` is refused."""
        if (table or self.writer == READER) and self.writer != MAINTENANCE_WRITER \
                and TABLE_OWNERS.get(table) != self.writer:
            raise JournalError(f"journal {self.path}: {what} refused: {table} is written by "
                               f"{TABLE_OWNERS[table]}, not {self.writer}")
        if not self._write_lock.acquire(timeout=self._busy_timeout_s):
            raise JournalError(f"journal {self.path}: {what} failed: another writer of this process "
                               f"held the journal for {self._busy_timeout_s}s")
        try:
            with self._errors(what):
                yield
        finally:
            self._write_lock.release()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {what} failed: {exc}") from exc

    def _close_quietly(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _amendment(kind: str, body: str) -> Amendment:
    if kind == "bust":
        return decode_as(body, FillBusted)
    return decode_as(body, FillCorrected)


def _fill_record(row: tuple[Any, ...]) -> JournaledFill:
    (venue, fill_id, client_order_id, symbol, side, quantity, price, leaves, venue_order_id, pnl, ts, rec,
     inferred, external) = row
    fill = OrderFilled(
        client_order_id=client_order_id, venue=venue, fill_id=fill_id, symbol=symbol, side=Side(side),
        quantity=Decimal(quantity), price=Decimal(price), leaves_quantity=Decimal(leaves),
        venue_order_id=venue_order_id, ts_ns=ts, inferred=bool(inferred),
    )
    return JournaledFill(fill=fill, realized_pnl=Decimal(pnl), recorded_ns=rec, external=bool(external))



def _order_record(row: tuple[Any, ...], filled: dict[tuple[str, str], Decimal]) -> OrderRecord:
    (client_order_id, venue, symbol, side, quantity, order_type, limit_price, stop_price, tif,
     reduce_only, source, created_ns, submitted_ns, status, venue_order_id, status_text, updated_ns) = row
    order = SubmitOrder(
        client_order_id=client_order_id, venue=venue, symbol=symbol, side=Side(side),
        quantity=Decimal(quantity), order_type=OrderType(order_type), limit_price=_decimal(limit_price),
        stop_price=_decimal(stop_price), time_in_force=TimeInForce(tif), reduce_only=bool(reduce_only),
        source=source, created_ns=created_ns,
    )
    filled_quantity = filled.get((venue, client_order_id), Decimal(0))
    current = OrderStatus(status)
    if filled_quantity >= order.quantity:
        current = OrderStatus.FILLED
    elif filled_quantity > 0 and current in (OrderStatus.PENDING, OrderStatus.ACCEPTED):
        current = OrderStatus.PARTIALLY_FILLED
    return OrderRecord(
        order=order, status=current, filled_quantity=filled_quantity, venue_order_id=venue_order_id,
        status_text=status_text, submitted_ns=submitted_ns, updated_ns=updated_ns,
    )
