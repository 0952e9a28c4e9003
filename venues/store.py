"""Durable state of a simulated venue: one SQLite file, one small transaction per change.

A ``VenueEngine`` with a store writes what each order event changed (the new execution,
the position of that symbol, the order that moved, the ids it used) in one transaction,
committed before the event is handed to anybody. The cost of an event does not grow with
the account's history, and a process killed with SIGKILL loses nothing it reported:
SQLite's write-ahead log is fsynced on every commit (``synchronous=FULL``) and a torn
write is rolled back when the file is next opened. No temporary files are involved.

The store keeps raw records (JSON bodies and a few columns); the engine encodes and
decodes them, so this module knows nothing of the engine's types.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "EngineStore", "StoreBatch", "StoredState", "store_path_for"]

SCHEMA_VERSION = 1
"""Version of the tables below; a file of another version is refused."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS markets (symbol TEXT PRIMARY KEY, mid TEXT NOT NULL,
                                    seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS positions (account TEXT NOT NULL, symbol TEXT NOT NULL,
                                      body BLOB NOT NULL, PRIMARY KEY (account, symbol));
CREATE TABLE IF NOT EXISTS fills (seq INTEGER PRIMARY KEY, fill_id TEXT NOT NULL UNIQUE,
                                  account TEXT NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS orders (account TEXT NOT NULL, client_order_id TEXT NOT NULL,
                                   body BLOB NOT NULL, PRIMARY KEY (account, client_order_id));
CREATE TABLE IF NOT EXISTS order_ids (account TEXT NOT NULL, client_order_id TEXT NOT NULL,
                                      PRIMARY KEY (account, client_order_id));
"""


def store_path_for(state_path: Path) -> Path:
    """The SQLite file kept beside a venue's JSON state file (``x.json`` -> ``x.sqlite3``)."""
    return state_path.with_suffix(".sqlite3")


@dataclass
class StoreBatch:
    """Changes to write in one transaction (the engine fills it, the store applies it)."""

    replace_all: bool = False
    """Empty every table first (a whole state is being written)."""
    meta: dict[str, str] = field(default_factory=dict)
    """Counters and identity (``venue``, ``next_order_id``, ``next_fill_id``)."""
    markets: list[tuple[str, str, int]] = field(default_factory=list)
    """``(symbol, mid, seq)`` to upsert."""
    positions: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(account, symbol, body)`` to upsert."""
    fills_added: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(fill_id, account, body)`` appended in this order."""
    fills_replaced: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(old fill_id, new fill_id, body)``: a corrected execution keeps its place."""
    fills_removed: list[str] = field(default_factory=list)
    """Fill ids of busted executions."""
    orders_put: list[tuple[str, str, bytes]] = field(default_factory=list)
    """``(account, client_order_id, body)`` of working orders to upsert."""
    orders_removed: list[tuple[str, str]] = field(default_factory=list)
    """``(account, client_order_id)`` of orders no longer working."""
    order_ids: list[tuple[str, str]] = field(default_factory=list)
    """``(account, client_order_id)`` accepted (kept to refuse duplicates)."""

    def __bool__(self) -> bool:
        return bool(
            self.replace_all or self.positions or self.fills_added or self.fills_replaced
            or self.fills_removed or self.orders_put or self.orders_removed or self.order_ids
            or self.markets
        )


@dataclass
class StoredState:
    """Everything a store holds, in raw form."""

    meta: dict[str, str]
    markets: list[tuple[str, str, int]]
    positions: list[tuple[str, str, bytes]]
    fills: list[tuple[str, bytes]]
    """``(account, body)`` in the order the executions happened."""
    orders: list[bytes]
    order_ids: list[tuple[str, str]]


class EngineStore:
    """One venue's state in one SQLite file (write-ahead log, fsync on every commit)."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the store at ``path``; ``ValueError`` naming the file when it
        is not a store this version can read."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ValueError(f"venue store {path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise ValueError(f"venue store {path}: unsupported schema version {row[0]}")
        except sqlite3.Error as exc:
            self._db.close()
            raise ValueError(f"venue store {path}: {exc}") from exc
        except ValueError:
            self._db.close()
            raise

    def is_empty(self) -> bool:
        """True when no state has been written yet."""
        row = self._db.execute("SELECT 1 FROM meta WHERE key='venue'").fetchone()
        return row is None

    def read(self) -> StoredState:
        """Everything the store holds."""
        db = self._db
        return StoredState(
            meta={key: value for key, value in db.execute("SELECT key, value FROM meta")},
            markets=[(s, m, q) for s, m, q in db.execute("SELECT symbol, mid, seq FROM markets")],
            positions=[
                (a, s, bytes(b)) for a, s, b in db.execute(
                    "SELECT account, symbol, body FROM positions ORDER BY account, symbol")
            ],
            fills=[(a, bytes(b)) for a, b in db.execute(
                "SELECT account, body FROM fills ORDER BY seq")],
            orders=[bytes(b) for (b,) in db.execute("SELECT body FROM orders ORDER BY rowid")],
            order_ids=[(a, c) for a, c in db.execute(
                "SELECT account, client_order_id FROM order_ids")],
        )

    def write(self, batch: StoreBatch) -> None:
        """Apply ``batch`` in one transaction; nothing of it is kept when it fails."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if batch.replace_all:
                for table in ("markets", "positions", "fills", "orders", "order_ids"):
                    db.execute(f"DELETE FROM {table}")
                db.execute("DELETE FROM meta WHERE key <> 'schema'")
            if batch.meta:
                db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", batch.meta.items())
            if batch.markets:
                db.executemany("INSERT OR REPLACE INTO markets VALUES (?, ?, ?)", batch.markets)
            if batch.positions:
                db.executemany("INSERT OR REPLACE INTO positions VALUES (?, ?, ?)",
                               batch.positions)
            if batch.fills_removed:
                db.executemany("DELETE FROM fills WHERE fill_id = ?",
                               [(fid,) for fid in batch.fills_removed])
            if batch.fills_replaced:
                db.executemany("UPDATE fills SET fill_id = ?, body = ? WHERE fill_id = ?",
                               [(new, body, old) for old, new, body in batch.fills_replaced])
            if batch.fills_added:
                db.executemany("INSERT INTO fills (fill_id, account, body) VALUES (?, ?, ?)",
                               batch.fills_added)
            if batch.orders_removed:
                db.executemany("DELETE FROM orders WHERE account = ? AND client_order_id = ?",
                               batch.orders_removed)
            if batch.orders_put:
                db.executemany("INSERT OR REPLACE INTO orders VALUES (?, ?, ?)", batch.orders_put)
            if batch.order_ids:
                db.executemany("INSERT OR IGNORE INTO order_ids VALUES (?, ?)", batch.order_ids)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._db.close()
