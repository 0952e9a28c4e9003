"""SIGKILL the service mid-trading against external venue processes, start it again:
the journal is replayed, each venue reconciled, no fill doubled, no order resent."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.system.processes import free_port, running, stop, tradeguard, wait_status

CYCLES = 10


def _config(zmq_port: int, fix_port: int) -> str:
    return f"""
[service]
on_shutdown = "leave"
[risk]
max_orders_per_s = 200
max_position = "50"
degradations_to_failsafe = 0
[supervision]
backoff_initial_s = 0.1
backoff_max_s = 1.0
connectors_intensity = 50
[keeper]
publish_interval_s = 0.1

[[connectors]]
name = "zmq"
kind = "zmq"
symbols = ["AAPL", "MSFT"]
order_endpoint = "tcp://127.0.0.1:{zmq_port}"
market_endpoint = "tcp://127.0.0.1:{zmq_port + 1}"

[[connectors]]
name = "fix"
kind = "fix"
symbols = ["AAPL", "MSFT"]
port = {fix_port}

[[strategies]]
name = "s-zmq"
venue = "zmq"
symbols = ["AAPL", "MSFT"]
interval_s = 0.03
quantity = "1"
max_position = "5"

[[strategies]]
name = "s-fix"
venue = "fix"
symbols = ["AAPL", "MSFT"]
interval_s = 0.03
quantity = "1"
max_position = "5"
"""


def _reconciled(status: dict[str, Any]) -> bool:
    return all(c["connected"] and c["reconciled"] is True for c in status["connectors"])


def _journal(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)


@pytest.mark.timeout(400)
def test_sigkill_mid_trading_recovers_every_time(tmp_path: Path) -> None:
    zmq_port, fix_port = free_port(pair=True), free_port()
    config = tmp_path / "venues.toml"
    config.write_text(_config(zmq_port, fix_port))
    state = tmp_path / "service"
    with running("venue", "zmq", "--port", str(zmq_port), "--state-dir", str(tmp_path / "vz")), \
            running("venue", "fix", "--port", str(fix_port), "--state-dir", str(tmp_path / "vf")):
        for cycle in range(CYCLES):
            proc = tradeguard("run", "--config", str(config), "--state-dir", str(state))
            try:
                # Replayed and reconciled with both venues after the previous kill ...
                wait_status(state, _reconciled, timeout_s=40, what=f"cycle {cycle}: reconciled")
                # ... and trading again before it is killed mid-stream.
                status = wait_status(state, lambda s: s["orders"]["fills"] >= 6,
                                     timeout_s=30, what=f"cycle {cycle}: fills")
                assert status["mode"] in ("LIVE", "DEGRADED"), status["mode"]
            finally:
                stop(proc, signal.SIGKILL)
            assert proc.returncode == -signal.SIGKILL

        # A last start: everything the venues confirmed is in the journal exactly once.
        with running("run", "--config", str(config), "--state-dir", str(state)):
            final = wait_status(state, _reconciled, timeout_s=40, what="final reconcile")
            for connector in final["connectors"]:
                assert connector["mismatches"] == []
        with _journal(state) as db:
            rows = db.execute("SELECT venue, fill_id FROM fills").fetchall()
            assert len(rows) == len(set(rows)) and rows, "a fill was doubled (or none journaled)"
            overfilled = db.execute(
                "SELECT o.client_order_id, o.quantity, SUM(CAST(f.quantity AS REAL)) FROM orders o "
                "JOIN fills f ON f.client_order_id = o.client_order_id "
                "GROUP BY o.client_order_id HAVING SUM(CAST(f.quantity AS REAL)) > CAST(o.quantity AS REAL)"
            ).fetchall()
            assert overfilled == [], f"an order filled more than once over: {overfilled}"
            orphans = db.execute(
                "SELECT COUNT(*) FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id "
                "WHERE o.client_order_id IS NULL"
            ).fetchone()[0]
            assert orphans == 0, "the venue filled an order the journal never sent"
            venues = {v for v, _ in rows}
        assert venues == {"zmq", "fix"}
