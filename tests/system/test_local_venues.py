"""The shipped local-venues configuration against the three simulated venue processes:
it trades over real ZeroMQ, FIX and IB-wire sessions, and a venue process killed and
started again ends with its connector connected again and its positions reconciled."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system.processes import free_port, stop, tradeguard, wait_status

ROOT = Path(__file__).resolve().parents[2]


def _connector(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["connectors"] if c["name"] == name)


def _all_trading(status: dict[str, Any]) -> bool:
    return all(c["connected"] and c["reconciled"] is True and (c.get("fills") or 0) > 0
               for c in status["connectors"])


@pytest.mark.timeout(240)
def test_local_venues_trade_on_three_protocols_and_survive_venue_restarts(tmp_path: Path) -> None:
    zmq_port, fix_port, tws_port = free_port(pair=True), free_port(), free_port()
    config = (ROOT / "config" / "local-venues.toml").read_text()
    for old, new in (("5701", zmq_port), ("5702", zmq_port + 1), ("5801", fix_port), ("5901", tws_port)):
        assert old in config
        config = config.replace(old, str(new))
    state = tmp_path / "service"
    config = config.replace('state_dir = "./state/local"', f'state_dir = "{state}"')
    config_path = tmp_path / "local-venues.toml"
    config_path.write_text(config)
    venue_args = {
        "zmq": ("venue", "zmq", "--port", str(zmq_port), "--state-dir", str(tmp_path / "vz")),
        "fix": ("venue", "fix", "--port", str(fix_port), "--state-dir", str(tmp_path / "vf")),
        "ib": ("venue", "tws", "--port", str(tws_port), "--state-dir", str(tmp_path / "vt")),
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, args in venue_args.items():
            procs[name] = tradeguard(*args)
        procs["service"] = tradeguard("run", "--config", str(config_path))
        status = wait_status(state, _all_trading, timeout_s=60, what="fills on all three protocols")
        assert status["mode"] == "LIVE"
        assert {c["name"] for c in status["connectors"]} == {"zmq", "fix", "ib"}

        for name in ("zmq", "fix", "ib"):
            killed_ns = time.time_ns()
            stop(procs[name], signal.SIGKILL)
            wait_status(state, lambda s, n=name: not _connector(s, n)["connected"], timeout_s=30,
                        what=f"{name} seen down")
            procs[name] = tradeguard(*venue_args[name])
            after = wait_status(
                state,
                lambda s, n=name, t=killed_ns: _connector(s, n)["connected"]
                and _connector(s, n)["reconciled"] is True and _connector(s, n)["reconciled_ns"] > t,
                timeout_s=60, what=f"{name} connected and reconciled again")
            row = _connector(after, name)
            assert row["mismatches"] == []
            keeper = {p["symbol"]: p["quantity"] for p in row["keeper_positions"] if p["quantity"] != "0"}
            venue = {p["symbol"]: p["quantity"] for p in row["venue_positions"] if p["quantity"] != "0"}
            assert keeper == venue
        assert stop(procs.pop("service")) == 0
    finally:
        for proc in procs.values():
            stop(proc, signal.SIGKILL)
