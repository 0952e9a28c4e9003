"""The journal's schema version: an older journal is brought forward at open, losing
nothing; a newer one is refused, naming both versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from actors import journal as journal_module
from actors.journal import KEEPER_WRITER, READER, SCHEMA_VERSION, Journal, JournalError

pytestmark = pytest.mark.timeout(30)


def _version_one(path: Path) -> None:
    db = sqlite3.connect(path)
    for statement in journal_module._SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(
        "INSERT INTO fills VALUES ('paper', 'F1', 'C1', 'AAPL', 'buy', '10', '100.5', '0', 'V1', '0', 1, 2)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()


def test_a_version_one_journal_is_migrated_at_open_and_keeps_its_fills(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _version_one(path)
    journal = Journal(path, writer=KEEPER_WRITER)
    journal.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    rows = db.execute("SELECT fill_id, quantity, price, inferred FROM fills").fetchall()
    assert rows == [("F1", "10", "100.5", 0)]
    db.close()
    # a second open finds nothing to do and a reader accepts it
    Journal(path, writer=KEEPER_WRITER).close()
    Journal(path, writer=READER).close()


def test_a_new_journal_is_created_at_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, writer=KEEPER_WRITER).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = {row[1] for row in db.execute("PRAGMA table_info(fills)")}
    assert "inferred" in columns
    db.close()


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal(path, writer=KEEPER_WRITER).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1}"):
        Journal(path, writer=KEEPER_WRITER)


def test_a_reader_refuses_an_old_journal_rather_than_migrating_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    _version_one(path)
    with pytest.raises(JournalError, match="a reader creates nothing"):
        Journal(path, writer=READER)
