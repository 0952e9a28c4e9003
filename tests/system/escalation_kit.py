"""The three simulated venue processes and a tradeguard service trading on them, for the
escalation scenarios: the shipped ``config/local-venues.toml`` on free ports, with the
settings a scenario overrides."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.system.processes import free_port, status, stop, tradeguard

ROOT = Path(__file__).resolve().parents[2]
VENUES = ("zmq", "fix", "ib")


class LocalVenues:
    """Three venue processes (ZeroMQ, FIX, fake TWS) and the service, each a real process."""

    def __init__(self, tmp_path: Path, *, risk: str = "", safety: str = "",
                 venue_flags: dict[str, tuple[str, ...]] | None = None) -> None:
        """``risk`` and ``safety``: TOML lines added to those sections; ``venue_flags``: extra
        command line options per venue process."""
        self.tmp = tmp_path
        zmq_port, fix_port, tws_port = free_port(pair=True), free_port(), free_port()
        config = (ROOT / "config" / "local-venues.toml").read_text()
        for old, new in (("5701", zmq_port), ("5702", zmq_port + 1), ("5801", fix_port), ("5901", tws_port)):
            assert old in config
            config = config.replace(old, str(new))
        self.state = tmp_path / "service"
        config = config.replace('state_dir = "./state/local"', f'state_dir = "{self.state}"')
        config = config.replace("[risk]\n", f"[risk]\n{risk}\n", 1)
        config += f"\n[safety]\n{safety}\n"
        self.config_path = tmp_path / "local-venues.toml"
        self.config_path.write_text(config)
        flags = venue_flags or {}
        self.venue_args = {
            "zmq": ("venue", "zmq", "--port", str(zmq_port), "--state-dir", str(tmp_path / "vz"),
                    *flags.get("zmq", ())),
            "fix": ("venue", "fix", "--port", str(fix_port), "--state-dir", str(tmp_path / "vf"),
                    *flags.get("fix", ())),
            "ib": ("venue", "tws", "--port", str(tws_port), "--state-dir", str(tmp_path / "vt"),
                   *flags.get("ib", ())),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.seen: list[dict[str, Any]] = []
        """Every status polled, in order."""

    def start_venue(self, name: str) -> None:
        self.procs[name] = tradeguard(*self.venue_args[name])

    def kill_venue(self, name: str) -> None:
        stop(self.procs.pop(name), signal.SIGKILL)

    def start_service(self) -> None:
        self.procs["service"] = tradeguard("run", "--config", str(self.config_path))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop(proc, signal.SIGKILL)
        self.procs.clear()

    # ---- watching ------------------------------------------------------------------------

    def poll(self) -> dict[str, Any] | None:
        """One status (kept in ``seen``), or None while the service does not answer."""
        current = status(self.state)
        if current is not None:
            self.seen.append(current)
        return current

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float,
             what: str) -> dict[str, Any]:
        """Poll until ``predicate`` holds (every status seen is kept)."""
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            last = self.poll()
            if last is not None and predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last status: {last}")

    def watch(self, seconds: float) -> list[dict[str, Any]]:
        """Poll for ``seconds``; the statuses seen."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            current = self.poll()
            if current is not None:
                seen.append(current)
            time.sleep(0.2)
        return seen

    def modes_seen(self) -> set[str]:
        return {s["mode"] for s in self.seen}

    # ---- the journal on disk ----------------------------------------------------------------

    def _query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.state / 'journal.sqlite3'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def refusals(self, venue: str, since_ns: int = 0) -> list[str]:
        """Reason codes of the orders to ``venue`` the governor refused, journaled since."""
        rows = self._query("SELECT body FROM order_events WHERE venue = ? AND kind LIKE '%eject%' "
                           "AND recorded_ns >= ?", venue, since_ns)
        return [json.loads(body).get("reason", "") for (body,) in rows]

    def mode_log(self) -> list[tuple[str, str, str]]:
        rows = self._query("SELECT previous, current, reason FROM mode_log ORDER BY id")
        return [(p, c, r) for p, c, r in rows]


def venue_states(current: dict[str, Any]) -> dict[str, str]:
    risk = current.get("risk") or {}
    states: dict[str, str] = risk.get("venue_states") or {}
    return states


def fills(current: dict[str, Any], name: str) -> int:
    row = next(c for c in current["connectors"] if c["name"] == name)
    return int(row.get("fills") or 0)


def connector(current: dict[str, Any], name: str) -> dict[str, Any]:
    row: dict[str, Any] = next(c for c in current["connectors"] if c["name"] == name)
    return row
